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
// list never shows a gap. An edit, delete or reaction renders its one message anew
// (message-view.js); a reply quotes its parent, and "N replies" opens the thread
// (thread-view.js).

import { channelTitle, channelTitleNodes, displayName, formatTime, h } from "./dom.js";
import { excerpt, messageRenderer } from "./message-view.js";
import { threadView } from "./thread-view.js";

// A property, not a constant, so loadtests/webapp.py can measure without the cap.
export const limits = { maxRendered: 2000 };
const TYPING_SEND_MS = 2000;
// Within this many pixels of the bottom, new messages keep the view at the bottom.
const STICK_PX = 80;

export function conversationView(store, { onBack, signal }) {
  const title = h("h2", { id: "conversation-title" });
  const online = h("button", { type: "button", class: "presence", "aria-expanded": "false", "aria-controls": "online-list" });
  // Who is online, and on demand every member (the first 100), each with a button
  // to write to them alone.
  const onlineUsers = h("ul", { class: "online-list", "aria-label": "Online" });
  const memberUsers = h("ul", { class: "online-list", "aria-label": "Members", hidden: true });
  const showMembers = h("button", { type: "button", class: "link", text: "All members" });
  const onlineList = h("div", { id: "online-list", class: "people", hidden: true }, onlineUsers, showMembers, memberUsers);
  const leave = h("button", { type: "button", class: "leave", text: "Leave" });
  const inviteToggle = h("button", { type: "button", class: "invite", text: "Invite", "aria-expanded": "false", "aria-controls": "invite-form" });
  const inviteStatus = h("p", { class: "status", role: "status" });
  const inviteForm = h(
    "form",
    { id: "invite-form", class: "invite-form", "aria-label": "Invite someone", hidden: true },
    h("label", { for: "invitee", class: "visually-hidden", text: "Username to invite" }),
    h("input", { id: "invitee", name: "username", required: true, maxlength: 33, autocomplete: "off", placeholder: "Username to invite" }),
    h("button", { type: "submit", class: "primary", text: "Send invitation" }),
    inviteStatus,
  );
  const muted = h("p", { class: "muted-note", role: "status", hidden: true });
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
  const replyText = h("span", { class: "quote" });
  const replyBar = h(
    "div",
    { class: "reply-bar", role: "status", hidden: true },
    replyText,
    h("button", { type: "button", class: "link", text: "Cancel reply", onclick: () => replyTo(null, true) }),
  );
  const empty = h("p", { class: "placeholder", text: "Pick a channel, or create one." });
  const element = h(
    "section",
    { class: "conversation", "aria-labelledby": "conversation-title" },
    h("header", { class: "conversation-header" }, back, title, online, inviteToggle, leave),
    inviteForm,
    onlineList,
    scroller,
    typing,
    muted,
    replyBar,
    composer,
  );

  let channelId = null;
  let replyingTo = null; // the message the composer answers
  const find = (id) => store.conversations.get(channelId)?.byId(id);
  function replyTo(message, focus = Boolean(message)) {
    replyingTo = message;
    replyBar.hidden = !message;
    replyText.textContent = message ? `Replying to ${excerpt(message)}` : "";
    if (focus) input.focus();
  }
  const renderer = messageRenderer(store, { find, onReply: replyTo, onThread: (message) => thread.open(message) });
  const thread = threadView(store, { renderer, signal });
  const root = h("div", { class: "conversation-pane" }, empty, element, thread.element);

  let seqs = []; // seqs in the list, ascending; parallel to its children
  let elements = new Map(); // seq -> element
  let lastTypingSent = 0;
  let typingTimer = null;
  let mutedTimer = null;

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
        const item = renderer.render(message);
        elements.set(message.seq, item);
        fragment.append(item);
      }
      messages.prepend(fragment);
      seqs = [...sorted.map((message) => message.seq), ...seqs];
      return;
    }
    for (const message of sorted) {
      if (elements.has(message.seq)) continue;
      const item = renderer.render(message);
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
      for (const seq of dropped) conversation.forget(seq);
      conversation.nextCursor = seqs[0];
    }
  }

  function renderStart() {
    const conversation = store.conversations.get(channelId);
    const cursor = conversation?.nextCursor;
    older.hidden = cursor === null || cursor === undefined;
    start.hidden = cursor !== null;
    start.textContent = `This is the beginning of ${channelTitle(store.channels.get(channelId))}.`;
  }

  function renderPending() {
    const conversation = store.conversations.get(channelId);
    const stick = nearBottom();
    const statuses = { sending: "Sending…", sent: "Sent", refused: "Not sent: you are muted" };
    pending.replaceChildren(
      ...[...(conversation?.pending.values() ?? [])].map((item) =>
        h(
          "li",
          { class: `message pending ${item.status}` },
          h(
            "div",
            { class: "meta" },
            h("span", { class: "author", text: displayName(store.users.get(store.me.id)) }),
            " ",
            h("span", { class: "status", text: statuses[item.status] }),
            item.status === "refused"
              ? h("button", { type: "button", class: "link", text: "Dismiss", "aria-label": "Dismiss the message not sent", onclick: () => store.dismissPending(channelId, item.clientId) })
              : null,
          ),
          item.replyTo ? h("p", { class: "quote", text: `↪ ${excerpt(find(item.replyTo))}` }) : null,
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
    onlineUsers.replaceChildren(
      ...(users === null
        ? [h("li", { text: "Too many to list" })]
        : [...users.values()].map((user) => personItem(channel, store.users.get(user.id) ?? user))),
    );
  }

  // Someone online or a member; outside a direct message, with a button to write to
  // them alone.
  function personItem(channel, user) {
    const name = displayName(user);
    const message = h("button", {
      type: "button",
      class: "link",
      text: "Message",
      "aria-label": `Message ${name}`,
      onclick: () =>
        store
          .directMessage(user.id)
          .then((id) => {
            input.focus();
            return store.openChannel(id);
          })
          .catch((problem) => store.notice(problem.message)),
    });
    const direct = channel.kind !== "dm" && user.id !== store.me.id;
    const role = user.role === "owner" || user.role === "moderator" ? ` (${user.role})` : "";
    return h("li", {}, h("span", { text: name + role }), direct ? [" ", message] : null);
  }

  function renderMuted() {
    clearTimeout(mutedTimer);
    const channel = store.channels.get(channelId);
    const isMuted = store.isMuted(channel);
    muted.hidden = !isMuted;
    if (!isMuted) return;
    muted.textContent = `You are muted here until ${formatTime(new Date(channel.mutedUntil).toISOString())}: messages you write are not sent.`;
    mutedTimer = setTimeout(renderMuted, Math.min(channel.mutedUntil - Date.now() + 50, 60_000));
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
    renderer.closeActions();
    replyTo(null);
    memberUsers.hidden = true;
    memberUsers.replaceChildren();
    showMembers.hidden = channel?.kind === "dm";
    newer.hidden = true;
    messages.replaceChildren();
    if (!channel) return;
    title.replaceChildren(...channelTitleNodes(channel));
    composerLabel.textContent = `Message ${channelTitle(channel)}`;
    input.placeholder = `Message ${channelTitle(channel)}`;
    // Only a private channel's moderators and owner invite; nobody leaves a direct message.
    inviteToggle.hidden = !(channel.kind === "private" && ["owner", "moderator"].includes(channel.role));
    inviteForm.hidden = true;
    inviteToggle.setAttribute("aria-expanded", "false");
    inviteStatus.textContent = "";
    leave.hidden = channel.kind === "dm";
    const conversation = store.conversations.get(channelId);
    if (conversation) {
      const all = [...conversation.messages.values()].sort((a, b) => a.seq - b.seq);
      if (all.length) insert(all.slice(-limits.maxRendered));
      if (all.length > limits.maxRendered) {
        // Forget what is not shown, so scrolling up reads it from history again.
        for (const message of all.slice(0, -limits.maxRendered)) conversation.forget(message.seq);
        conversation.nextCursor = seqs[0];
      }
    }
    renderStart();
    renderPending();
    renderPresence();
    renderTyping();
    renderMuted();
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
  store.addEventListener("muted", (event) => event.detail.channelId === channelId && renderMuted(), { signal });
  // A changed message is drawn anew where it is, and so are the replies quoting it.
  store.addEventListener(
    "change",
    (event) => {
      const { channelId: id, frame, messages: changed } = event.detail;
      if (id !== channelId || !changed.length) return;
      // Quotes show the text: only an edit or a delete changes them.
      const quoted = frame?.type === "message_edited" || frame?.type === "message_deleted";
      const quoting = new Set(quoted ? changed.map((message) => message.id) : []);
      const redraw = new Set(changed);
      for (const message of store.conversations.get(channelId)?.messages.values() ?? []) {
        if (quoting.has(message.reply_to)) redraw.add(message);
      }
      for (const message of redraw) {
        const old = elements.get(message.seq);
        if (old) elements.set(message.seq, renderer.rerender(old, message));
      }
      if (replyingTo && quoting.has(replyingTo.id)) replyTo(replyingTo.deleted_at ? null : replyingTo, false);
    },
    { signal },
  );

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

  showMembers.addEventListener("click", () => {
    const channel = store.channels.get(channelId);
    store
      .members(channelId)
      .then((members) => {
        if (store.currentId !== channel?.id) return;
        memberUsers.replaceChildren(...members.map((member) => personItem(channel, member)));
        memberUsers.hidden = false;
        showMembers.hidden = true;
      })
      .catch((problem) => store.notice(problem.message));
  });
  online.addEventListener("click", () => {
    const open = onlineList.hidden;
    onlineList.hidden = !open;
    online.setAttribute("aria-expanded", String(open));
  });
  inviteToggle.addEventListener("click", () => {
    const open = inviteForm.hidden;
    inviteForm.hidden = !open;
    inviteToggle.setAttribute("aria-expanded", String(open));
    if (open) inviteForm.querySelector("input").focus();
  });
  inviteForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = channelId;
    const username = new FormData(inviteForm).get("username");
    inviteStatus.textContent = "Inviting…";
    store
      .invite(id, username)
      .then((user) => {
        inviteForm.reset();
        inviteStatus.textContent = `Invited ${displayName(user)}.`;
      })
      .catch((problem) => {
        inviteStatus.textContent = problem.describe?.() ?? problem.message;
      });
  });
  leave.addEventListener("click", () => {
    const channel = store.channels.get(channelId);
    if (channel) store.leaveChannel(channel.id).catch((problem) => store.notice(problem.message));
  });

  function submit() {
    if (store.send(input.value, replyingTo?.id ?? null)) {
      input.value = "";
      replyTo(null, false);
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
