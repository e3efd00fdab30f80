// One message on screen: author, time, "(edited)", the quote of the message it
// answers, its text (or a tombstone), its reactions, its reply count, and one
// "Message actions" button that opens the panel of what the person may do with
// it: reply, react, edit (their own text), delete (their own, or anyone's as the
// channel's owner or a moderator).
//
// A message costs one extra element (that button) until it has reactions or
// replies: the panel is built when opened, and only one is open at a time.

import { displayName, formatTime, h } from "./dom.js";

export const EMOJIS = ["👍", "❤️", "😂", "🎉", "😮", "😢"];
const QUOTE_CHARS = 80;

export function messageText(message) {
  const body = message.body ?? {};
  if (body.type === "text") return body.content;
  if (body.type === "file") return `📎 ${body.filename}`;
  return "(a message this app cannot show yet)";
}

// The start of a message, for a quote.
export function excerpt(message) {
  if (!message) return "a message further up";
  if (message.deleted_at) return "a deleted message";
  const text = messageText(message).replace(/\s+/g, " ");
  const cut = text.length > QUOTE_CHARS ? `${text.slice(0, QUOTE_CHARS)}…` : text;
  return `${displayName(message.user)}: ${cut}`;
}

// `find(id)`: a message of the channel by id, if loaded; `onReply(message)` and
// `onThread(message)`: what the Reply and "N replies" buttons do.
export function messageRenderer(store, { find, onReply, onThread }) {
  let open = null; // {panel, toggle}: the one actions panel open

  function closeActions(refocus = false) {
    if (!open) return;
    open.panel.remove();
    open.toggle.setAttribute("aria-expanded", "false");
    if (refocus) open.toggle.focus();
    open = null;
  }

  function actionsPanel(message, item, toggle) {
    const panel = h("div", { class: "message-actions", role: "group", "aria-label": "Message actions" });
    panel.addEventListener("keydown", (event) => {
      if (event.key === "Escape") closeActions(true);
    });
    const done = (sent) => sent && closeActions(true);
    const buttons = [
      h("button", { type: "button", text: "Reply", onclick: () => { closeActions(); onReply(message); } }),
      ...EMOJIS.map((emoji) => h("button", { type: "button", class: "emoji", text: emoji, "aria-label": `React ${emoji}`, onclick: () => done(store.react(message, emoji)) })),
    ];
    if (message.user_id === store.me.id && message.body?.type === "text") {
      buttons.push(h("button", { type: "button", text: "Edit", onclick: () => { closeActions(); editForm(message, item); } }));
    }
    if (store.mayDelete(message)) {
      const confirm = h(
        "span",
        { class: "confirm" },
        h("span", { text: "Delete this message?" }),
        h("button", { type: "button", class: "danger", text: "Yes, delete", onclick: () => done(store.deleteMessage(message)) }),
        h("button", { type: "button", text: "Cancel", onclick: () => closeActions(true) }),
      );
      buttons.push(
        h("button", {
          type: "button",
          text: "Delete",
          onclick: () => {
            panel.replaceChildren(confirm);
            confirm.querySelector("button").focus();
          },
        }),
      );
    }
    panel.append(...buttons);
    return panel;
  }

  function toggleActions(message, item, toggle) {
    const wasOpen = open?.toggle === toggle;
    closeActions();
    if (wasOpen) return;
    const panel = actionsPanel(message, item, toggle);
    toggle.closest(".meta").after(panel);
    toggle.setAttribute("aria-expanded", "true");
    open = { panel, toggle };
    panel.querySelector("button").focus();
  }

  // The text becomes a form until saved (the edit event renders the message anew)
  // or cancelled. Enter saves, Shift+Enter starts a new line, Escape cancels.
  function editForm(message, item) {
    const text = item.querySelector(".text");
    const input = h("textarea", { rows: "2", maxlength: "10000", "aria-label": "Edit message" });
    input.value = message.body.content;
    // The form may have moved into a newer rendering of the message (rerender):
    // it finds its item, and the message's current text, when it ends.
    const cancel = () => {
      const toggle = form.closest("li")?.querySelector(".actions-toggle");
      form.replaceWith(h("p", { class: "text", text: messageText(message) }));
      toggle?.focus();
    };
    const save = () => {
      if (input.value === message.body.content) cancel();
      else store.editMessage(message, input.value);
    };
    const form = h(
      "form",
      { class: "edit-form", "aria-label": "Edit message", onsubmit: (event) => { event.preventDefault(); save(); } },
      input,
      h("button", { type: "submit", class: "primary", text: "Save" }),
      h("button", { type: "button", text: "Cancel", onclick: cancel }),
    );
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        save();
      } else if (event.key === "Escape") {
        cancel();
      }
    });
    text.replaceWith(form);
    input.focus();
  }

  function reactionsRow(message) {
    const reactions = message.reactions ?? [];
    if (!reactions.length) return null;
    return h(
      "div",
      { class: "reactions", role: "group", "aria-label": "Reactions" },
      reactions.map((reaction) =>
        h("button", {
          type: "button",
          class: "reaction",
          text: `${reaction.emoji} ${reaction.count}`,
          "aria-pressed": String(Boolean(reaction.me)),
          "data-action": `react:${reaction.emoji}`,
          onclick: () => store.react(message, reaction.emoji),
        }),
      ),
    );
  }

  // `inThread`: inside the thread view, where the quote and reply count are the frame.
  function render(message, { inThread = false } = {}) {
    const deleted = Boolean(message.deleted_at);
    const item = h("li", { class: deleted ? "message deleted" : "message", "data-seq": message.seq });
    const toggle = deleted
      ? null
      : h("button", { type: "button", class: "actions-toggle", text: "⋯", "aria-label": "Message actions", "aria-expanded": "false", "data-action": "actions" });
    toggle?.addEventListener("click", () => toggleActions(message, item, toggle));
    const replies = message.reply_count ?? 0;
    item.append(
      ...[
        h(
          "div",
          { class: "meta" },
          h("span", { class: "author", text: displayName(message.user) }),
          " ",
          h("time", { datetime: message.created_at, text: formatTime(message.created_at) }),
          message.edited_at && !deleted ? h("span", { class: "edited", text: " (edited)" }) : null,
          toggle,
        ),
        message.reply_to && !inThread ? h("p", { class: "quote", text: `↪ ${excerpt(find(message.reply_to))}` }) : null,
        h("p", { class: "text", text: deleted ? "This message was deleted." : messageText(message) }),
        deleted ? null : reactionsRow(message),
        replies && !inThread
          ? h("button", { type: "button", class: "link replies", text: replies === 1 ? "1 reply" : `${replies} replies`, "data-action": "replies", onclick: () => onThread(message) })
          : null,
      ].filter(Boolean),
    );
    return item;
  }

  // Render `message` again in place of `old`, keeping the focus on the same control.
  function rerender(old, message, options) {
    const hadFocus = old.contains(document.activeElement);
    const action = hadFocus ? document.activeElement.dataset.action : undefined;
    if (open && old.contains(open.panel)) open = null;
    const fresh = render(message, options);
    // An edit in progress survives someone else's reaction (the edit event itself
    // ends it: the text it saved is the message's body then).
    const editing = old.querySelector(".edit-form");
    const stillEditing = editing && !message.deleted_at && editing.elements[0].value !== message.body?.content;
    if (stillEditing) fresh.querySelector(".text").replaceWith(editing);
    old.replaceWith(fresh);
    if (hadFocus && stillEditing) {
      editing.elements[0].focus();
    } else if (hadFocus) {
      const same = action ? fresh.querySelector(`[data-action="${CSS.escape(action)}"]`) : null;
      (same ?? fresh.querySelector(".actions-toggle") ?? fresh).focus();
    }
    return fresh;
  }

  return { render, rerender, closeActions };
}
