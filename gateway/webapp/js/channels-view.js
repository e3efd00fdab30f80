// The channel list: the person's channels (public, private and direct messages)
// with unread counts, most recently active first; pending invitations to accept or
// decline; creating a channel (public or private); starting a direct message;
// browsing and joining public channels.

import { channelTitle, channelTitleNodes, clear, formatTime, h } from "./dom.js";

export function channelsView(store, { onOpen, signal }) {
  const list = h("ul", { class: "channel-list" });
  const error = h("p", { class: "error", role: "alert" });
  const buttons = new Map(); // channel id -> button, reused so focus survives a re-order

  function channelButton(channel) {
    let button = buttons.get(channel.id);
    if (!button) {
      button = h("button", { type: "button", class: "channel", onclick: () => onOpen(channel.id) });
      buttons.set(channel.id, button);
    }
    const unread = store.unread(channel);
    const badge = unread
      ? h("span", { class: "badge" }, String(unread), h("span", { class: "visually-hidden", text: " unread" }))
      : null;
    button.replaceChildren(...[h("span", { class: `name ${channel.kind}` }, ...channelTitleNodes(channel)), badge].filter(Boolean));
    if (channel.id === store.currentId) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
    return button;
  }

  function render() {
    const channels = store.sortedChannels();
    for (const id of [...buttons.keys()]) if (!store.channels.has(id)) buttons.delete(id);
    const items = channels.map((channel) => {
      const button = channelButton(channel);
      return button.parentElement?.tagName === "LI" ? button.parentElement : h("li", {}, button);
    });
    // Re-ordered in place: moving an element keeps it (and its focus) alive.
    items.forEach((item, index) => {
      if (list.children[index] !== item) list.insertBefore(item, list.children[index] ?? null);
    });
    while (list.children.length > items.length) list.lastElementChild.remove();
    if (!channels.length) list.replaceChildren(h("li", { class: "empty", text: "No channels yet: create one or browse." }));
  }

  async function attempt(action) {
    error.textContent = "";
    try {
      await action();
    } catch (problem) {
      error.textContent = problem.describe?.() ?? String(problem.message ?? problem);
    }
  }

  // A form folded under its summary; `action(data)` resolves to the channel to open.
  function foldedForm(summary, label, submit, fields, action) {
    const box = h("details", { class: "box" }, h("summary", { text: summary }));
    const form = h(
      "form",
      {
        "aria-label": label,
        onsubmit: (event) => {
          event.preventDefault();
          const data = new FormData(form);
          attempt(async () => {
            const id = await action(data);
            form.reset();
            box.open = false;
            onOpen(id);
          });
        },
      },
      ...fields,
      h("button", { type: "submit", class: "primary", text: submit }),
    );
    box.append(form);
    return box;
  }

  const createBox = foldedForm(
    "New channel",
    "New channel",
    "Create channel",
    [
      h("label", { class: "field" }, h("span", { text: "Channel name" }), h("input", { name: "name", required: true, maxlength: 64 })),
      h("label", { class: "field" }, h("span", { text: "Description" }), h("input", { name: "description", maxlength: 500 })),
      h("label", { class: "check" }, h("input", { type: "checkbox", name: "private" }), h("span", { text: "Private: by invitation only" })),
    ],
    (data) => store.createChannel(data.get("name").trim(), data.get("description").trim(), data.get("private") === "on"),
  );
  const directBox = foldedForm(
    "New message",
    "New direct message",
    "Open conversation",
    [h("label", { class: "field" }, h("span", { text: "Their username" }), h("input", { name: "username", required: true, maxlength: 33, autocomplete: "off" }))],
    async (data) => store.directMessage((await store.findUser(data.get("username"))).id),
  );

  const invitationList = h("ul", { class: "invitation-list" });
  const invitations = h("section", { class: "invitations", "aria-labelledby": "invitations-title", hidden: true }, h("h2", { id: "invitations-title", text: "Invitations" }), invitationList);
  function renderInvitations() {
    invitations.hidden = store.invitations.length === 0;
    invitationList.replaceChildren(
      ...store.invitations.map((invitation) => {
        const channel = invitation.channel;
        const answer = (accept) =>
          attempt(async () => {
            await store.answerInvitation(channel.id, accept);
            if (accept) onOpen(channel.id);
          });
        return h(
          "li",
          {},
          h("span", { class: "name", text: channelTitle(channel) }),
          h("time", { class: "description", datetime: invitation.created_at, text: formatTime(invitation.created_at) }),
          h("span", { class: "answers" },
            h("button", { type: "button", class: "primary", text: "Accept", "aria-label": `Accept the invitation to ${channel.name}`, onclick: () => answer(true) }),
            h("button", { type: "button", text: "Decline", "aria-label": `Decline the invitation to ${channel.name}`, onclick: () => answer(false) }),
          ),
        );
      }),
    );
  }

  const browseList = h("ul", { class: "browse-list" });
  async function browse() {
    clear(browseList);
    browseList.append(h("li", { text: "Loading…" }));
    await attempt(async () => {
      const all = await store.browseChannels();
      clear(browseList);
      for (const channel of all) {
        const joined = store.channels.has(channel.id);
        const join = h("button", {
          type: "button",
          text: joined ? "Open" : "Join",
          "aria-label": `${joined ? "Open" : "Join"} ${channel.name}`,
          onclick: () =>
            attempt(async () => {
              if (!store.channels.has(channel.id)) await store.joinChannel(channel.id);
              browseBox.open = false;
              onOpen(channel.id);
            }),
        });
        browseList.append(
          h("li", {}, h("span", { class: "name", text: channelTitle(channel) }), h("span", { class: "description", text: channel.description }), join),
        );
      }
      if (!all.length) browseList.append(h("li", { text: "No channels yet." }));
    });
  }
  const browseBox = h("details", { class: "box", ontoggle: (event) => event.currentTarget.open && browse() }, h("summary", { text: "Browse channels" }), browseList);

  const element = h(
    "nav",
    { class: "sidebar", "aria-labelledby": "channels-title" },
    invitations,
    h("h2", { id: "channels-title", text: "Channels" }),
    list,
    error,
    createBox,
    directBox,
    browseBox,
  );
  // At most one render per animation frame, however many messages arrive in it.
  let scheduled = false;
  const renderSoon = () => {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      render();
    });
  };
  store.addEventListener("channels", renderSoon, { signal });
  store.addEventListener("current", renderSoon, { signal });
  store.addEventListener("invitations", renderInvitations, { signal });
  render();
  renderInvitations();
  return { element, focus: () => list.querySelector("button")?.focus() };
}
