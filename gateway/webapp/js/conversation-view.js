// The open channel: its messages in seq order (older pages load when scrolled to
// the top), the person's own messages still pending, who is online and who is
// typing, and the composer (Enter sends, Shift+Enter starts a new line).
//
// Messages are inserted into the list one by one in seq order, never re-rendered
// wholesale, so a live message costs one element however long the channel is.
// At most limits.maxRendered stay in the document (see loadtests/RESULTS.md): past it,
// the ones furthest from where the person reads are dropped. Older ones come back
// from history when scrolled to again; newer ones (dropped while reading far back)
// behind a "Jump to newest" button, and live messages wait behind it too, so the
// list never shows a gap.

import { displayName, formatTime, h } from "./dom.js";

// A property, not a constant, so loadtests/webapp.py can measure without the cap.
export const limits = { maxRendered: 2000 };
const TYPING_SEND_MS = 2000;
// Within this many pixels of the bottom, new messages keep the view at the bottom.
const STICK_PX = 80;

function messageText(message) {
  const body = message.body ?? {};
  if (body.type === "text") return body.content;
  if (body.type === "file") return `📎 ${body.filename}`;
  return "(a message this app cannot show yet)";
}

function messageItem(message) {
  return h(
    "li",
    { class: "message", "data-seq": message.seq },
    h("div", { class: "meta" }, h("span", { class: "author", text: displayName(message.user) }), " ", h("time", { datetime: message.created_at, text: formatTime(message.created_at) })),
    h("p", { class: "text", text: messageText(message) }),
  );
}

export function conversationView(store, { onBack, signal }) {
  const title = h("h2", { id: "conversation-title" });
  const online = h("button", { type: "button", class: "presence", "aria-expanded": "false", "aria-controls": "online-list" });
  const onlineList = h("ul", { id: "online-list", class: "online-list", hidden: true, "aria-label": "Online" });
  const leave = h("button", { type: "button", class: "leave", text: "Leave" });
  const back = h("button", { type: "button", class: "back", text: "← Channels", onclick: onBack });
  const older = h("button", { type: "button", class: "older", text: "Load older messages" });
  const start = h("p", { class: "start", hidden: true });
  const messages = h("ol", { class: "messages" });
  const pending = h("ol", { class: "messages pending-list", "aria-label": "Sending" });
  const newer = h("button", { type: "button", class: "newer", hidden: true, text: "Jump to newest messages" });
  const scroller = h(
    "div",
    { class: "scroller", role: "log", "aria-live": "polite", "aria-relevant": "additions", tabindex: "0", "aria-labelledby": "conversation-title" },
    older,
    start,
    messages,
    newer,
    pending,
  );
  const typing = h("p", { class: "typing", "aria-live": "polite" });
  const input = h("textarea", { id: "composer", rows: "2", maxlength: "10000", autocomplete: "off" });
  const composerLabel = h("label", { for: "composer", class: "visually-hidden" });
  const composer = h("form", { class: "composer", "aria-label": "Send a message" }, composerLabel, input, h("button", { type: "submit", class: "primary", text: "Send" }));
  const empty = h("p", { class: "placeholder", text: "Pick a channel, or create one." });
  const element = h(
    "section",
    { class: "conversation", "aria-labelledby": "conversation-title" },
    h("header", { class: "conversation-header" }, back, title, online, leave),
    onlineList,
    scroller,
    typing,
    composer,
  );
  const root = h("div", { class: "conversation-pane" }, empty, element);

  let channelId = null;
  let seqs = []; // seqs in the list, ascending; parallel to its children
  let elements = new Map(); // seq -> element
  let lastTypingSent = 0;
  let typingTimer = null;

  function nearBottom() {
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < STICK_PX;
  }

  function scrollToBottom() {
    scroller.scrollTop = scroller.scrollHeight;
  }

  // Where `seq` goes in `seqs` (binary search).
  function position(seq) {
    let low = 0;
    let high = seqs.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      if (seqs[middle] < seq) low = middle + 1;
      else high = middle;
    }
    return low;
  }

  function insert(added) {
    const sorted = added.filter((message) => !elements.has(message.seq)).sort((a, b) => a.seq - b.seq);
    if (!sorted.length) return;
    // The common cases first: a page of older messages, or new ones at the end.
    if (seqs.length && sorted[sorted.length - 1].seq < seqs[0]) {
      const fragment = document.createDocumentFragment();
      for (const message of sorted) {
        const item = messageItem(message);
        elements.set(message.seq, item);
        fragment.append(item);
      }
      messages.prepend(fragment);
      seqs = [...sorted.map((message) => message.seq), ...seqs];
      return;
    }
    for (const message of sorted) {
      if (elements.has(message.seq)) continue;
      const item = messageItem(message);
      const at = position(message.seq);
      messages.insertBefore(item, at < seqs.length ? elements.get(seqs[at]) : null);
      seqs.splice(at, 0, message.seq);
      elements.set(message.seq, item);
    }
  }

  // Keep at most limits.maxRendered: drop from the end the person is not reading.
  function trim(fromTop) {
    const conversation = store.conversations.get(channelId);
    const extra = seqs.length - limits.maxRendered;
    if (extra <= 0) return;
    const dropped = fromTop ? seqs.splice(0, extra) : seqs.splice(seqs.length - extra, extra);
    if (!fromTop) newer.hidden = false;
    for (const seq of dropped) {
      elements.get(seq).remove();
      elements.delete(seq);
    }
    if (fromTop && conversation) {
      // Scrolling up again reads them back from history, from the oldest shown.
      for (const seq of dropped) conversation.messages.delete(seq);
      conversation.nextCursor = seqs[0];
    }
  }

  function renderStart() {
    const conversation = store.conversations.get(channelId);
    const cursor = conversation?.nextCursor;
    older.hidden = cursor === null || cursor === undefined;
    start.hidden = cursor !== null;
    start.textContent = `This is the beginning of # ${store.channels.get(channelId)?.name ?? ""}.`;
  }

  function renderPending() {
    const conversation = store.conversations.get(channelId);
    const stick = nearBottom();
    pending.replaceChildren(
      ...[...(conversation?.pending.values() ?? [])].map((item) =>
        h(
          "li",
          { class: `message pending ${item.status}` },
          h("div", { class: "meta" }, h("span", { class: "author", text: displayName(store.users.get(store.me.id)) }), " ", h("span", { class: "status", text: item.status === "sent" ? "Sent" : "Sending…" })),
          h("p", { class: "text", text: item.content }),
        ),
      ),
    );
    if (stick) scrollToBottom();
  }

  function renderPresence() {
    const channel = store.channels.get(channelId);
    if (!channel) return;
    const { count, users } = channel.presence;
    online.textContent = `${count} online`;
    onlineList.replaceChildren(
      ...(users === null
        ? [h("li", { text: "Too many to list" })]
        : [...users.values()].map((user) => h("li", { text: displayName(store.users.get(user.id) ?? user) }))),
    );
  }

  function renderTyping() {
    clearTimeout(typingTimer);
    const names = store.typingNames(channelId);
    typing.textContent = names.length === 0 ? "" : names.length === 1 ? `${names[0]} is typing…` : `${names.join(", ")} are typing…`;
    if (names.length) typingTimer = setTimeout(renderTyping, 1000);
  }

  function show() {
    channelId = store.currentId;
    const channel = store.channels.get(channelId);
    empty.hidden = Boolean(channel);
    element.hidden = !channel;
    seqs = [];
    elements = new Map();
    queued = { newer: [], older: [] };
    newer.hidden = true;
    messages.replaceChildren();
    if (!channel) return;
    title.textContent = `# ${channel.name}`;
    composerLabel.textContent = `Message # ${channel.name}`;
    input.placeholder = `Message # ${channel.name}`;
    const conversation = store.conversations.get(channelId);
    if (conversation) {
      const all = [...conversation.messages.values()].sort((a, b) => a.seq - b.seq);
      if (all.length) insert(all.slice(-limits.maxRendered));
      if (all.length > limits.maxRendered) {
        // Forget what is not shown, so scrolling up reads it from history again.
        for (const message of all.slice(0, -limits.maxRendered)) conversation.messages.delete(message.seq);
        conversation.nextCursor = seqs[0];
      }
    }
    renderStart();
    renderPending();
    renderPresence();
    renderTyping();
    scrollToBottom();
  }

  store.addEventListener("current", show, { signal });
  // Arrivals are applied once per animation frame: a replay of thousands of messages
  // costs one layout per frame, not one per message.
  let queued = { newer: [], older: [] };
  let flushScheduled = false;
  function flush() {
    flushScheduled = false;
    const { newer: newest, older: olderPages } = queued;
    queued = { newer: [], older: [] };
    if (olderPages.length) {
      if (seqs.length) {
        // A page above what is shown: keep the person's place.
        scroller.setAttribute("aria-busy", "true");
        const height = scroller.scrollHeight;
        insert(olderPages);
        trim(false);
        scroller.scrollTop += scroller.scrollHeight - height;
        scroller.setAttribute("aria-busy", "false");
      } else {
        insert(olderPages);
        scrollToBottom(); // the first page
      }
    }
    // While newer messages are dropped, live ones wait with them behind the button.
    if (newest.length && newer.hidden) {
      const stick = nearBottom();
      insert(newest);
      trim(true);
      if (stick) scrollToBottom();
    }
    renderStart();
  }
  store.addEventListener("messages", (event) => {
    const { channelId: id, added, older: isOlder } = event.detail;
    if (id !== channelId || !added.length) return;
    (isOlder ? queued.older : queued.newer).push(...added);
    if (!flushScheduled) {
      flushScheduled = true;
      requestAnimationFrame(flush);
    }
  }, { signal });
  store.addEventListener("pending", (event) => event.detail.channelId === channelId && renderPending(), { signal });
  store.addEventListener("presence", (event) => event.detail.channelId === channelId && renderPresence(), { signal });
  store.addEventListener("typing", (event) => event.detail.channelId === channelId && renderTyping(), { signal });

  newer.addEventListener("click", () => {
    show();
    input.focus();
  });
  older.addEventListener("click", () => store.loadOlder(channelId).catch((problem) => store.notice(problem.message)));
  // Reaching the top loads the page before it.
  const observer = new IntersectionObserver((entries) => {
    if (entries.some((entry) => entry.isIntersecting) && !older.hidden) older.click();
  }, { root: scroller });
  observer.observe(older);
  signal.addEventListener("abort", () => observer.disconnect());

  online.addEventListener("click", () => {
    const open = onlineList.hidden;
    onlineList.hidden = !open;
    online.setAttribute("aria-expanded", String(open));
  });
  leave.addEventListener("click", () => {
    const channel = store.channels.get(channelId);
    if (channel) store.leaveChannel(channel.id).catch((problem) => store.notice(problem.message));
  });

  function submit() {
    if (store.send(input.value)) {
      input.value = "";
      scrollToBottom();
    }
  }
  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    }
  });
  input.addEventListener("input", () => {
    const now = Date.now();
    if (input.value && now - lastTypingSent > TYPING_SEND_MS) {
      lastTypingSent = now;
      store.typing();
    }
  });

  show();
  return { element: root, focus: () => input.focus() };
}
