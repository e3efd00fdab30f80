// The channel list: the person's channels with unread counts, most recently
// active first; creating a channel; browsing and joining others.

import { clear, h } from "./dom.js";

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
    button.replaceChildren(...[h("span", { class: "name", text: `# ${channel.name}` }), badge].filter(Boolean));
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

  const create = h(
    "form",
    {
      "aria-label": "New channel",
      onsubmit: (event) => {
        event.preventDefault();
        const form = event.currentTarget;
        const data = new FormData(form);
        attempt(async () => {
          const id = await store.createChannel(data.get("name").trim(), data.get("description").trim());
          form.reset();
          createBox.open = false;
          onOpen(id);
        });
      },
    },
    h("label", { class: "field" }, h("span", { text: "Channel name" }), h("input", { name: "name", required: true, maxlength: 64 })),
    h("label", { class: "field" }, h("span", { text: "Description" }), h("input", { name: "description", maxlength: 500 })),
    h("button", { type: "submit", class: "primary", text: "Create channel" }),
  );
  const createBox = h("details", { class: "box" }, h("summary", { text: "New channel" }), create);

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
          h("li", {}, h("span", { class: "name", text: `# ${channel.name}` }), h("span", { class: "description", text: channel.description }), join),
        );
      }
      if (!all.length) browseList.append(h("li", { text: "No channels yet." }));
    });
  }
  const browseBox = h("details", { class: "box", ontoggle: (event) => event.currentTarget.open && browse() }, h("summary", { text: "Browse channels" }), browseList);

  const element = h(
    "nav",
    { class: "sidebar", "aria-labelledby": "channels-title" },
    h("h2", { id: "channels-title", text: "Channels" }),
    list,
    error,
    createBox,
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
  render();
  return { element, focus: () => list.querySelector("button")?.focus() };
}
