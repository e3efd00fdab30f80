// Building elements. Text is always set as text (textContent or text nodes),
// never parsed as HTML: a message "<img src=x onerror=...>" shows those characters.

export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") element.className = value;
    else if (name === "text") element.textContent = value;
    else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(element) {
  element.replaceChildren();
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

export function formatTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const today = new Date().toDateString() === date.toDateString();
  return (today ? timeFormat : dayFormat).format(date);
}

export function displayName(user) {
  if (!user) return "Someone";
  return user.name || user.username || `User ${user.id}`;
}

// How a channel is named on screen: "# general", "🔒 plans" (private), or the other
// person's name for a direct message (whose own name is empty).
export function channelTitle(channel) {
  if (!channel) return "";
  if (channel.kind === "dm") return `@ ${displayName(channel.otherUser)}`;
  if (channel.kind === "private") return `🔒 ${channel.name}`;
  return `# ${channel.name}`;
}

// The title as elements, with what its sign means spelled out for screen readers.
export function channelTitleNodes(channel) {
  const kind = { dm: " (direct message)", private: " (private)" }[channel?.kind];
  const title = document.createTextNode(channelTitle(channel));
  return kind ? [title, h("span", { class: "visually-hidden", text: kind })] : [title];
}
