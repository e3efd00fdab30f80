// A message's thread, in a modal dialog: the message, its replies oldest first
// (GET .../messages/{id}/replies, then live ones as they arrive), and a composer
// that replies to it. Escape or Close returns to the channel.

import { applyChange, CHANGE_TYPES } from "./store.js";
import { h } from "./dom.js";

const REPLY_PAGES_MAX = 5; // 200 each

export function threadView(store, { renderer, signal }) {
  const heading = h("h2", { id: "thread-title", text: "Thread" });
  const parentList = h("ol", { class: "messages thread-parent", "aria-label": "Message" });
  const replyList = h("ol", { class: "messages", "aria-label": "Replies" });
  const status = h("p", { class: "start", role: "status" });
  const input = h("textarea", { rows: "2", maxlength: "10000", "aria-label": "Reply in thread" });
  const composer = h("form", { class: "composer" }, input, h("button", { type: "submit", class: "primary", text: "Reply" }));
  const dialog = h(
    "dialog",
    { class: "thread", "aria-labelledby": "thread-title" },
    h("header", { class: "conversation-header" }, heading, h("button", { type: "button", text: "Close", onclick: () => dialog.close() })),
    h("div", { class: "scroller" }, parentList, status, replyList),
    composer,
  );

  let parent = null;
  let replies = new Map(); // seq -> reply

  // The thread is short: drawn anew on every change, the focus put back where it was.
  function render() {
    const active = dialog.contains(document.activeElement) ? document.activeElement : null;
    const seq = active?.closest("li[data-seq]")?.dataset.seq;
    const action = active?.dataset.action;
    parentList.replaceChildren(renderer.render(parent, { inThread: true }));
    const sorted = [...replies.values()].sort((a, b) => a.seq - b.seq);
    replyList.replaceChildren(...sorted.map((reply) => renderer.render(reply, { inThread: true })));
    status.textContent = sorted.length ? "" : "No replies yet.";
    if (seq && action) dialog.querySelector(`li[data-seq="${seq}"] [data-action="${CSS.escape(action)}"]`)?.focus();
  }

  async function load(message) {
    status.textContent = "Loading…";
    let cursor = null;
    for (let page = 0; page < REPLY_PAGES_MAX; page += 1) {
      const found = await store.replies(message, cursor);
      if (parent !== message) return;
      for (const reply of found.messages) if (!replies.has(reply.seq)) replies.set(reply.seq, reply);
      cursor = found.next_cursor;
      if (cursor === null) break;
    }
    render();
  }

  function open(message) {
    parent = message;
    replies = new Map();
    // The replies already here show at once; history brings the rest.
    for (const each of store.conversations.get(message.channel_id)?.messages.values() ?? []) {
      if (each.reply_to === message.id) replies.set(each.seq, each);
    }
    render();
    dialog.showModal();
    input.focus();
    load(message).catch((problem) => {
      status.textContent = problem.message;
    });
  }

  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    if (parent && store.send(input.value, parent.id)) input.value = "";
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });
  dialog.addEventListener("close", () => {
    parent = null;
    replies = new Map();
  });

  const here = (detail) => dialog.open && parent && detail.channelId === parent.channel_id;
  store.addEventListener(
    "messages",
    (event) => {
      if (!here(event.detail)) return;
      const fresh = event.detail.added.filter((message) => message.reply_to === parent.id && !replies.has(message.seq));
      for (const reply of fresh) replies.set(reply.seq, reply);
      if (fresh.length) render();
    },
    { signal },
  );
  store.addEventListener(
    "change",
    (event) => {
      if (!here(event.detail)) return;
      const { frame } = event.detail;
      // The replies read from history are copies of their own: apply the event to
      // them too (applying one twice to the same message ends the same way).
      if (frame && CHANGE_TYPES.has(frame.type)) {
        for (const reply of replies.values()) if (reply.id === frame.message_id) applyChange(reply, frame, store.me.id);
      }
      render();
    },
    { signal },
  );

  return { element: dialog, open };
}
