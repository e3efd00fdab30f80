// The app's state and everything that changes it: the session, the channel list
// with read state, and each opened channel's messages, pending sends, presence
// and typing. Views only render it; they call the store's actions and listen to
// its events:
//   "session"       logged in or out (detail: {reason} on an ended session)
//   "channels"      the list, an unread count or the order changed
//   "connection"    the socket's state (detail: {state, delay, attempt})
//   "current"       another channel is open (or none)
//   "messages"      messages arrived in an opened channel (detail: {channelId, added, older})
//   "pending"       the channel's own unacknowledged messages changed (detail: {channelId})
//   "presence", "typing", "notice" (detail: {channelId} / {text})
//
// Messages are keyed by seq in each channel, so whatever a resume delivers twice
// (a replay overlapping history, an ack and its message) shows once.

import { Api, tokenClaims } from "./api.js";
import { MuxSocket } from "./socket.js";

const TOKEN_KEY = "chat-group.token";
const HISTORY_PAGE = 50;
const READ_THROTTLE_MS = 1000;
// What the server takes per frame (WS_MAX_BODY_BYTES' default): a longer message
// is refused before it is sent rather than left pending.
const MAX_FRAME_BYTES = 10 * 1024;
// Without a live socket, presence refetches at most this often per channel.
const PRESENCE_REFETCH_MS = 10_000;

class Conversation {
  constructor() {
    this.messages = new Map(); // seq -> message frame
    this.pending = new Map(); // client_id -> {clientId, content, createdAt, status}
    this.nextCursor = undefined; // undefined: not loaded; null: the start is reached
    this.loadingOlder = false;
  }

  add(frames) {
    const added = [];
    for (const frame of frames) {
      if (this.messages.has(frame.seq)) continue;
      this.messages.set(frame.seq, frame);
      added.push(frame);
    }
    return added;
  }
}

export class Store extends EventTarget {
  constructor() {
    super();
    this.api = new Api({ onWait: (seconds) => this.notice(`Server busy: retrying in ${seconds} s`) });
    this.reset();
  }

  reset() {
    this.me = null;
    this.socket = null;
    this.channels = new Map(); // id -> channel with {lastSeq, lastReadSeq, activity, presence, typing}
    this.conversations = new Map(); // id -> Conversation, for channels opened
    this.users = new Map(); // id -> {id, name, username}
    this.currentId = null;
    this.connection = { state: "connecting" };
    this.wasOpen = false; // whether the socket opened before: the next open is a reconnect
    this.listed = false; // whether the channel list was read once
    this.readTimers = new Map();
    this.presenceFetched = new Map();
  }

  emit(type, detail = {}) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  notice(text) {
    this.emit("notice", { text });
  }

  // --- session

  // The token lives in sessionStorage: it survives a reload of this tab, is not
  // shared with other tabs (each can hold another person) and is gone when the
  // tab closes. It never goes into a URL.
  async resume() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) return false;
    try {
      await this.begin(token);
      return true;
    } catch {
      this.end();
      return false;
    }
  }

  async login(identity, password) {
    await this.begin(await this.api.login(identity, password));
  }

  async signup(fields) {
    await this.begin(await this.api.signup(fields));
  }

  async begin(token) {
    const claims = tokenClaims(token);
    if (!claims || typeof claims.user_id !== "number") throw new Error("unreadable token");
    this.api.token = token;
    this.me = { id: claims.user_id, username: claims.username };
    this.users.set(this.me.id, { id: this.me.id, name: claims.username, username: claims.username });
    const mine = await this.api.myChannels();
    sessionStorage.setItem(TOKEN_KEY, token);
    this.socket = new MuxSocket(token);
    this.socket.addEventListener("frame", (event) => this.receive(event.detail));
    this.socket.addEventListener("state", (event) => this.connectionChanged(event.detail));
    this.socket.addEventListener("unauthorized", () => this.end("Your session ended. Log in again."));
    this.mergeChannels(mine);
    this.socket.start();
    this.emit("session");
  }

  async logout() {
    this.socket?.stop();
    try {
      await this.api.logout(); // revokes the token on every gateway
    } catch {
      // the token is dropped here anyway
    }
    this.end();
  }

  end(reason = null) {
    this.socket?.stop();
    for (const timer of this.readTimers.values()) clearTimeout(timer);
    sessionStorage.removeItem(TOKEN_KEY);
    this.api.token = null;
    this.reset();
    this.emit("session", { reason });
  }

  // --- channels

  mergeChannels(mine) {
    const seen = new Set();
    mine.forEach((item, index) => {
      seen.add(item.id);
      const known = this.channels.get(item.id);
      if (known) {
        known.lastSeq = Math.max(known.lastSeq, item.last_seq);
        known.lastReadSeq = Math.max(known.lastReadSeq, item.last_read_seq);
        known.role = item.role;
        return;
      }
      this.channels.set(item.id, {
        id: item.id,
        name: item.name,
        description: item.description,
        role: item.role,
        lastSeq: item.last_seq,
        lastReadSeq: item.last_read_seq,
        // The server's order (most recently active first) until something happens;
        // one created or joined later goes to the top.
        activity: this.listed ? Date.now() : mine.length - index,
        presence: { count: 0, users: new Map() },
        typing: new Map(),
      });
      this.socket.subscribe(item.id, item.last_seq);
    });
    for (const id of [...this.channels.keys()]) if (!seen.has(id)) this.dropChannel(id);
    this.listed = true;
    this.emit("channels");
  }

  dropChannel(id) {
    this.channels.delete(id);
    this.conversations.delete(id);
    this.socket?.unsubscribe(id);
    if (this.currentId === id) {
      this.currentId = null;
      this.emit("current");
    }
  }

  sortedChannels() {
    return [...this.channels.values()].sort((a, b) => b.activity - a.activity);
  }

  unread(channel) {
    return Math.max(0, channel.lastSeq - channel.lastReadSeq);
  }

  async refreshChannels() {
    this.mergeChannels(await this.api.myChannels());
  }

  async createChannel(name, description) {
    const channel = await this.api.createChannel(name, description);
    await this.refreshChannels();
    return channel.id;
  }

  async joinChannel(id) {
    await this.api.joinChannel(id);
    await this.refreshChannels();
  }

  async leaveChannel(id) {
    await this.api.leaveChannel(id);
    this.dropChannel(id);
    this.emit("channels");
  }

  browseChannels() {
    return this.api.allChannels();
  }

  // --- the open channel

  async openChannel(id) {
    if (!this.channels.has(id)) return;
    this.currentId = id;
    this.emit("current");
    this.markReadSoon(id, 0);
    if (!this.conversations.has(id)) {
      const conversation = new Conversation();
      this.conversations.set(id, conversation);
      await this.loadFirstPage(id, conversation);
    }
    await this.fetchPresence(id);
  }

  async loadFirstPage(id, conversation) {
    const page = await this.api.messages(id, null, HISTORY_PAGE);
    if (this.conversations.get(id) !== conversation) return;
    this.remember(page.messages);
    conversation.nextCursor = page.next_cursor;
    const added = conversation.add(page.messages);
    this.emit("messages", { channelId: id, added, older: true });
    // History is what PostgreSQL holds; messages acknowledged but not written yet
    // may sit between its newest and the seq the socket resumed from. Subscribing
    // again from the page's newest replays them (the rest are dropped as known).
    const newest = Math.max(0, ...page.messages.map((message) => message.seq));
    const channel = this.channels.get(id);
    if (channel && newest < channel.lastSeq) this.socket.subscribe(id, newest);
  }

  async loadOlder(id) {
    const conversation = this.conversations.get(id);
    if (!conversation || conversation.loadingOlder || conversation.nextCursor == null) return;
    conversation.loadingOlder = true;
    try {
      const page = await this.api.messages(id, conversation.nextCursor, HISTORY_PAGE);
      this.remember(page.messages);
      conversation.nextCursor = page.next_cursor;
      const added = conversation.add(page.messages);
      this.emit("messages", { channelId: id, added, older: true });
    } finally {
      conversation.loadingOlder = false;
    }
  }

  async fetchPresence(id) {
    this.presenceFetched.set(id, Date.now());
    const data = await this.api.presence(id);
    const channel = this.channels.get(id);
    if (!channel) return;
    channel.presence.count = data.online_count;
    channel.presence.users = data.users === null ? null : new Map();
    for (const user of data.users ?? []) {
      this.users.set(user.id, user);
      channel.presence.users.set(user.id, user);
    }
    this.emit("presence", { channelId: id });
  }

  // Send a text message in the open channel; false (with a notice) if it cannot be sent.
  send(content) {
    const id = this.currentId;
    if (id === null || content.trim() === "") return false;
    const frame = { type: "send", channel_id: id, body: { type: "text", content }, client_id: "w-".padEnd(64, "x") };
    if (new TextEncoder().encode(JSON.stringify(frame)).length > MAX_FRAME_BYTES) {
      this.notice("That message is too long to send.");
      return false;
    }
    const clientId = this.socket.send(id, content);
    const conversation = this.conversations.get(id);
    conversation?.pending.set(clientId, {
      clientId,
      content,
      createdAt: new Date().toISOString(),
      status: "sending",
    });
    this.emit("pending", { channelId: id });
    return true;
  }

  typing() {
    if (this.currentId !== null) this.socket.typing(this.currentId);
  }

  // Mark the channel read up to what it holds, at most once a second.
  markReadSoon(id, delay = READ_THROTTLE_MS) {
    if (this.readTimers.has(id)) return;
    this.readTimers.set(
      id,
      setTimeout(() => {
        this.readTimers.delete(id);
        this.markRead(id);
      }, delay),
    );
  }

  markRead(id) {
    const channel = this.channels.get(id);
    if (!channel || id !== this.currentId || document.visibilityState !== "visible") return;
    if (channel.lastSeq <= channel.lastReadSeq) return;
    if (this.socket.markRead(id, channel.lastSeq)) {
      channel.lastReadSeq = channel.lastSeq;
      this.emit("channels");
    }
  }

  // --- what the socket says

  connectionChanged(detail) {
    this.connection = detail;
    this.emit("connection", detail);
    if (detail.state !== "open") return;
    const reconnected = this.wasOpen;
    this.wasOpen = true;
    if (reconnected) {
      // Read markers are not replayed: other devices may have moved them meanwhile.
      this.refreshChannels().catch(() => {});
      if (this.currentId !== null) {
        this.markReadSoon(this.currentId, 0);
        this.fetchPresence(this.currentId).catch(() => {});
      }
    }
  }

  remember(messages) {
    for (const message of messages) if (message.user) this.users.set(message.user.id, message.user);
  }

  receive(frame) {
    const channel = this.channels.get(frame.channel_id);
    if (!channel) return;
    switch (frame.type) {
      case "message":
        this.receiveMessage(channel, frame);
        break;
      case "ack":
        this.receiveAck(channel, frame);
        break;
      case "read":
        if (frame.user_id === this.me.id && frame.last_read_seq > channel.lastReadSeq) {
          channel.lastReadSeq = frame.last_read_seq;
          this.emit("channels");
        }
        break;
      case "typing":
        this.receiveTyping(channel, frame);
        break;
      case "presence":
        this.receivePresence(channel, frame);
        break;
      case "error":
        this.receiveError(channel, frame);
        break;
      default:
        break; // frames added later (edits, reactions) are ignored until handled here
    }
  }

  receiveMessage(channel, frame) {
    this.remember([frame]);
    channel.lastSeq = Math.max(channel.lastSeq, frame.seq);
    channel.activity = Date.now();
    if (channel.typing.delete(frame.user_id)) this.emit("typing", { channelId: channel.id });
    const conversation = this.conversations.get(channel.id);
    if (conversation) {
      if (frame.client_id && conversation.pending.delete(frame.client_id)) {
        this.emit("pending", { channelId: channel.id });
      }
      const added = conversation.add([frame]);
      if (added.length) this.emit("messages", { channelId: channel.id, added, older: false });
    }
    if (channel.id === this.currentId) this.markReadSoon(channel.id);
    this.emit("channels");
  }

  receiveAck(channel, frame) {
    const item = this.conversations.get(channel.id)?.pending.get(frame.client_id);
    if (!item) return;
    // Stored: it stays in the pending list, marked sent, until its message arrives
    // (that frame can come before or after the ack).
    item.status = "sent";
    this.emit("pending", { channelId: channel.id });
  }

  receiveTyping(channel, frame) {
    if (frame.user_id === this.me.id) return;
    channel.typing.set(frame.user_id, Date.now() + frame.expires_in_ms);
    this.emit("typing", { channelId: channel.id });
  }

  typingNames(id) {
    const channel = this.channels.get(id);
    if (!channel) return [];
    const now = Date.now();
    const names = [];
    for (const [userId, until] of channel.typing) {
      if (until <= now) channel.typing.delete(userId);
      else names.push(this.users.get(userId)?.name ?? `User ${userId}`);
    }
    return names;
  }

  receivePresence(channel, frame) {
    const presence = channel.presence;
    presence.count = frame.online_count;
    if (frame.user_id === undefined) {
      presence.users = null; // a big channel: counts only
    } else if (presence.users === null || !this.users.has(frame.user_id)) {
      // Small again, or someone we cannot name yet: read the list once.
      const last = this.presenceFetched.get(channel.id) ?? 0;
      if (channel.id === this.currentId && Date.now() - last > PRESENCE_REFETCH_MS) {
        this.fetchPresence(channel.id).catch(() => {});
      }
      if (presence.users !== null) this.applyPresence(presence, frame);
    } else {
      this.applyPresence(presence, frame);
    }
    this.emit("presence", { channelId: channel.id });
  }

  applyPresence(presence, frame) {
    if (frame.status === "online") {
      presence.users.set(frame.user_id, this.users.get(frame.user_id) ?? { id: frame.user_id });
    } else {
      presence.users.delete(frame.user_id);
    }
  }

  receiveError(channel, frame) {
    if (frame.code === "not_a_member") {
      this.dropChannel(channel.id);
      this.notice(`You are no longer a member of ${channel.name}.`);
      this.emit("channels");
    } else if (frame.code === "channel_rewound" || frame.code === "history_gap") {
      // Some seqs may differ from what is shown: read the channel again.
      const conversation = this.conversations.get(channel.id);
      if (conversation) {
        const fresh = new Conversation();
        fresh.pending = conversation.pending;
        this.conversations.set(channel.id, fresh);
        this.emit("current");
        this.loadFirstPage(channel.id, fresh).catch(() => {});
      }
    } else if (frame.code !== "rate_limited") {
      this.notice(frame.message ?? `Refused: ${frame.code}`);
    }
  }
}
