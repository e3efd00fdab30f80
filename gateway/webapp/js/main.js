// Entry point: the store, the connection banner, and which view is on screen.

import { authView } from "./auth-view.js";
import { channelsView } from "./channels-view.js";
import { conversationView } from "./conversation-view.js";
import { h } from "./dom.js";
import { Store } from "./store.js";

const NOTICE_MS = 6000;

// Exported for loadtests/webapp.py, which feeds it synthetic messages to time scrolling.
export const store = new Store();
const app = document.getElementById("app");
const banner = document.getElementById("connection");
const notices = document.getElementById("notices");

function connectionText(detail) {
  switch (detail.state) {
    case "connecting":
      return "Connecting…";
    case "reconnecting":
      return `Reconnecting in ${Math.max(1, Math.round(detail.delay / 1000))} s (attempt ${detail.attempt})…`;
    case "closed":
      return detail.reason ?? "Disconnected.";
    default:
      return "";
  }
}

store.addEventListener("connection", (event) => {
  const text = connectionText(event.detail);
  banner.hidden = text === "";
  banner.dataset.state = event.detail.state;
  const retry = h("button", { type: "button", class: "link", text: "Retry now", onclick: () => store.socket?.retryNow() });
  banner.replaceChildren(h("span", { text }), ...(event.detail.state === "reconnecting" ? [retry] : []));
});

store.addEventListener("notice", (event) => {
  const item = h("p", { text: event.detail.text });
  notices.append(item);
  setTimeout(() => item.remove(), NOTICE_MS);
});

window.addEventListener("online", () => store.socket?.retryNow());
document.addEventListener("visibilitychange", () => {
  if (store.currentId !== null) store.markReadSoon(store.currentId, 0);
  if (document.visibilityState === "visible") store.pageShown();
});

function showAuth(reason) {
  views.abort();
  banner.hidden = true;
  const view = authView(store);
  app.replaceChildren(view.element);
  view.focus();
  view.showReason(reason);
  performance.mark("app-interactive");
}

// The chat views listen to the store only while that session lasts.
let views = new AbortController();

function showChat() {
  views.abort();
  views = new AbortController();
  const { signal } = views;
  const shell = h("div", { class: "shell", "data-view": "list" });
  const open = (id) => {
    shell.dataset.view = "conversation";
    store.openChannel(id).catch((problem) => store.notice(problem.message));
    conversation.focus();
  };
  const channels = channelsView(store, { onOpen: open, signal });
  const conversation = conversationView(store, {
    signal,
    onBack: () => {
      shell.dataset.view = "list";
      channels.focus();
    },
  });
  store.addEventListener(
    "current",
    () => {
      if (store.currentId === null) shell.dataset.view = "list";
    },
    { signal },
  );
  const header = h(
    "header",
    { class: "top" },
    h("h1", { text: "Chat Group" }),
    h("span", { class: "me", text: `@${store.me.username}` }),
    h("button", { type: "button", text: "Log out", onclick: () => store.logout() }),
  );
  shell.append(channels.element, conversation.element);
  app.replaceChildren(header, shell);
  performance.mark("app-interactive");
  const first = store.sortedChannels()[0];
  if (first) open(first.id);
  else channels.focus();
}

store.addEventListener("session", (event) => {
  if (store.me) showChat();
  else showAuth(event.detail.reason);
});

store.resume().then((resumed) => {
  if (!resumed) showAuth();
});
