// The app's state and everything that changes it: the session, the channel list
// with read state, and each opened channel's messages, pending sends, presence
// and typing. Views only render it; they call the store's actions and listen to
// its events:
//   "session"       logged in or out (detail: {reason} on an ended session)
//   "channels"      the list, an unread count or the order changed
//   "connection"    the socket's state (detail: {state, delay, attempt})
//   "current"       another channel is open (or none)
//   "messages"      messages arrived in an opened channel (detail: {channelId, added, older})
//   "change"        an edit, delete or reaction (detail: {channelId, frame, messages}: the
//                   event, and the opened channel's messages it changed, in place)
//   "pending"       the channel's own unacknowledged messages changed (detail: {channelId})
//   "presence", "typing", "notice" (detail: {channelId} / {text})
//   "invitations"   the pending invitations changed
//   "muted"         the person's mute in a channel changed (detail: {channelId})
//
// Messages are keyed by seq in each channel, so whatever a resume delivers twice
// (a replay overlapping history, an ack and its message) shows once. Edits, deletes
// and reactions take seqs of their own in the same order: each is applied once, to
// the message it names, and never shown as a message. History holds each message's
// latest version; a replay from the newest message's seq repeats the events after
// it, which, applied in order, end on that same version.

import { Api, tokenClaims } from "./api.js";
import { channelTitle, formatTime } from "./dom.js";
import { MuxSocket } from "./socket.js";

const TOKEN_KEY = "chat-group.token";
const HISTORY_PAGE = 50;
const READ_THROTTLE_MS = 1000;
// What the server takes per frame (WS_MAX_BODY_BYTES' default): a longer message
// is refused before it is sent rather than left pending.
const MAX_FRAME_BYTES = 10 * 1024;
// Without a live socket, presence refetches at most this often per channel.
const PRESENCE_REFETCH_MS = 10_000;
// Finding a username pages GET /api/v1/users (it has no search): at most this many users.
const USER_PAGE = 500;
const USER_PAGES_MAX = 20;

// Invitations and direct messages others start reach nobody's socket (the person is
// not subscribed to a channel they are not in yet): the list and the invitations
// are read again this often while the page is visible, and on load and reconnect.
// A property, not a constant, so the browser tests need not wait half a minute.
export const refresh = { intervalMs: 30_000 };

// Apply a change event to a message (in place); false if it changes nothing shown.
export function applyChange(message, frame, meId) {
  if (message.deleted_at) return false; // nothing changes a tombstone
  switch (frame.type) {
    case "message_edited":
      message.body = frame.body;
      message.edited_at = frame.created_at;
      return true;
    case "message_deleted":
      message.body = {};
      message.deleted_at = frame.created_at;
      message.reactions = [];
      return true;
    case "reaction": {
      const reactions = message.reactions ?? [];
      let entry = reactions.find((each) => each.emoji === frame.emoji);
      if (!entry) {
        entry = { emoji: frame.emoji, count: 0, me: false };
        reactions.push(entry); // in order of first use, as history lists them
      }
      entry.count = frame.count; // the count after this change
      if (frame.user_id === meId) entry.me = frame.op === "add";
      message.reactions = reactions.filter((each) => each.count > 0);
      return true;
    }
    default:
      return false;
  }
}

export const CHANGE_TYPES = new Set(["message_edited", "message_deleted", "reaction"]);

class Conversation {
  constructor() {
    this.messages = new Map(); // seq -> message (a history item or a live frame, kept current)
    this.ids = new Map(); // message id -> seq
    this.changes = new Set(); // seqs of the change events applied
    this.pending = new Map(); // client_id -> {clientId, content, createdAt, status}
    this.nextCursor = undefined; // undefined: not loaded; null: the start is reached
    this.loadingOlder = false;
  }

  add(frames) {
    const added = [];
    for (const frame of frames) {
      if (this.messages.has(frame.seq)) continue;
      this.messages.set(frame.seq, frame);
      this.ids.set(frame.id, frame.seq);
      added.push(frame);
    }
    return added;
  }

  byId(id) {
    const seq = this.ids.get(id);
    return seq === undefined ? undefined : this.messages.get(seq);
  }

  // Off the page, to be read from history again.
  forget(seq) {
    const message = this.messages.get(seq);
    if (!message) return;
    this.messages.delete(seq);
    this.ids.delete(message.id);
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
    this.listAsked = 0; // refreshChannels calls made
    this.listApplied = 0; // the latest of them applied
    this.invitationsAsked = 0;
    this.invitationsApplied = 0;
    this.readTimers = new Map();
    this.presenceFetched = new Map();
    this.learning = new Set(); // user ids being read by learnUser
    this.invitations = []; // pending, newest first: {channel, created_at, ...}
    this.refreshTimer = null;
    this.refreshedAt = 0;
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
    this.refreshedAt = Date.now();
    this.refreshInvitations().catch(() => {}); // the channels were just read
    this.refreshSoon();
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
    clearTimeout(this.refreshTimer);
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
        known.unreadBase = item.unread_count;
        known.unreadBaseSeq = item.last_seq;
        for (const seq of known.liveUnread) if (seq <= item.last_seq) known.liveUnread.delete(seq);
        return;
      }
      if (item.other_user) this.users.set(item.other_user.id, item.other_user);
      this.channels.set(item.id, {
        id: item.id,
        name: item.name,
        description: item.description,
        kind: item.kind,
        otherUser: item.other_user,
        role: item.role,
        mutedUntil: 0, // ms; known from a muted frame or a refused send
        lastSeq: item.last_seq,
        lastReadSeq: item.last_read_seq,
        // Unread messages (edits, deletes and reactions take seqs but are not counted):
        // the list's count up to its last_seq, plus the messages seen live after it.
        unreadBase: item.unread_count,
        unreadBaseSeq: item.last_seq,
        liveUnread: new Set(), // seqs
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
    const base = channel.lastReadSeq >= channel.unreadBaseSeq ? 0 : channel.unreadBase;
    let live = 0;
    for (const seq of channel.liveUnread) if (seq > channel.lastReadSeq) live += 1;
    return base + live;
  }

  // Lists read concurrently (the periodic refresh, a channel just created) may answer
  // out of order: one asked for before another that was applied is dropped, or it
  // would drop the channel the later one brought.
  async refreshChannels() {
    const ticket = ++this.listAsked;
    const mine = await this.api.myChannels();
    if (ticket < this.listApplied) return;
    this.listApplied = ticket;
    this.mergeChannels(mine);
  }

  async createChannel(name, description, isPrivate = false) {
    const channel = await this.api.createChannel(name, description, isPrivate);
    await this.refreshChannels();
    return channel.id;
  }

  // The list and the invitations again, now and then every refresh.intervalMs while
  // the page is visible (a hidden one catches up when it is shown again).
  refreshSoon(delay = refresh.intervalMs) {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => {
      if (!this.me) return;
      if (document.visibilityState === "visible") {
        this.refreshedAt = Date.now();
        Promise.all([this.refreshChannels(), this.refreshInvitations()]).catch(() => {});
      }
      this.refreshSoon();
    }, delay);
  }

  pageShown() {
    if (this.me && Date.now() - this.refreshedAt > refresh.intervalMs) this.refreshSoon(0);
  }

  // As with the channel list, an answer older than the state shown is dropped
  // (answering an invitation counts as newer than every read before it).
  async refreshInvitations() {
    const ticket = ++this.invitationsAsked;
    const invitations = await this.api.myInvitations();
    if (ticket < this.invitationsApplied) return;
    this.invitationsApplied = ticket;
    this.invitations = invitations;
    this.emit("invitations");
  }

  async answerInvitation(channelId, accept) {
    try {
      await this.api.answerInvitation(channelId, accept);
    } finally {
      // Answered, or gone meanwhile (revoked, answered on another device): either way
      // it is not pending any more.
      this.invitationsApplied = ++this.invitationsAsked;
      this.invitations = this.invitations.filter((item) => item.channel.id !== channelId);
      this.emit("invitations");
    }
    if (accept) await this.refreshChannels();
  }

  // A user by username (any case): those already seen first, else GET /api/v1/users
  // page by page, up to USER_PAGES_MAX pages. Throws if there is none.
  async findUser(username) {
    const wanted = username.trim().replace(/^@/, "").toLowerCase();
    const match = (user) => user.username?.toLowerCase() === wanted;
    const known = [...this.users.values()].find(match);
    if (known) return known;
    for (let pageIndex = 0; pageIndex < USER_PAGES_MAX; pageIndex += 1) {
      const users = await this.api.users(pageIndex * USER_PAGE, USER_PAGE);
      const found = users.find(match);
      if (found) {
        this.users.set(found.id, found);
        return found;
      }
      if (users.length < USER_PAGE) break;
    }
    throw new Error(`Nobody is called @${wanted}.`);
  }

  async invite(channelId, username) {
    const user = await this.findUser(username);
    await this.api.invite(channelId, user.id);
    return user;
  }

  // The direct message with a user (the same one however often asked): its id.
  async directMessage(userId) {
    const channel = await this.api.directMessage(userId);
    await this.refreshChannels();
    return channel.id;
  }

  // The channel's members (the first 100), remembered by id for their names.
  async members(channelId) {
    const members = await this.api.members(channelId);
    for (const member of members) if (!this.users.has(member.id)) this.users.set(member.id, member);
    return members;
  }

  isMuted(channel) {
    return Boolean(channel && channel.mutedUntil > Date.now());
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
  // `replyTo`: the id of the message this one answers.
  send(content, replyTo = null) {
    const id = this.currentId;
    if (id === null || content.trim() === "") return false;
    const frame = { type: "send", channel_id: id, body: { type: "text", content }, client_id: "w-".padEnd(64, "x"), reply_to: 2 ** 53 }; // at its longest
    if (new TextEncoder().encode(JSON.stringify(frame)).length > MAX_FRAME_BYTES) {
      this.notice("That message is too long to send.");
      return false;
    }
    const clientId = this.socket.send(id, content, replyTo);
    const conversation = this.conversations.get(id);
    conversation?.pending.set(clientId, {
      clientId,
      content,
      replyTo,
      createdAt: new Date().toISOString(),
      status: "sending",
    });
    this.emit("pending", { channelId: id });
    return true;
  }

  // Edit, delete, react: over the socket, answered by the change event (or an error
  // frame, shown as a notice). False, with a notice, while the channel is not live.
  change(frame) {
    if (this.socket.change(frame)) return true;
    this.notice("Not connected: try again once the connection is back.");
    return false;
  }

  editMessage(message, content) {
    if (content.trim() === "") return false;
    const body = { type: "text", content };
    return this.change({ type: "edit", channel_id: message.channel_id, message_id: message.id, body });
  }

  deleteMessage(message) {
    return this.change({ type: "delete", channel_id: message.channel_id, message_id: message.id });
  }

  // Add the reaction, or take it back if it is the person's already.
  react(message, emoji) {
    const mine = (message.reactions ?? []).some((each) => each.emoji === emoji && each.me);
    return this.change({ type: "react", channel_id: message.channel_id, message_id: message.id, emoji, op: mine ? "remove" : "add" });
  }

  // Whether the person may delete the message: their own, or anyone's as the
  // channel's owner or a moderator.
  mayDelete(message) {
    const role = this.channels.get(message.channel_id)?.role;
    return message.user_id === this.me.id || role === "owner" || role === "moderator";
  }

  // A message's replies, oldest first: {messages, next_cursor} (pass it as afterSeq).
  replies(message, afterSeq = null) {
    return this.api.replies(message.channel_id, message.id, afterSeq);
  }

  typing() {
    // A muted person's typing is refused too: not sent while the mute is known.
    if (this.currentId !== null && !this.isMuted(this.channels.get(this.currentId))) {
      this.socket.typing(this.currentId);
    }
  }

  // A refused message the person has read about: off the screen.
  dismissPending(channelId, clientId) {
    if (this.conversations.get(channelId)?.pending.delete(clientId)) this.emit("pending", { channelId });
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
      this.refreshInvitations().catch(() => {});
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
      case "muted":
        if (frame.user_id === this.me.id) this.mutedChanged(channel, frame.until_ms);
        break;
      case "message_edited":
      case "message_deleted":
      case "reaction":
        this.receiveChange(channel, frame);
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
    if (frame.seq > channel.unreadBaseSeq && frame.seq > channel.lastReadSeq) channel.liveUnread.add(frame.seq);
    channel.activity = Date.now();
    if (channel.typing.delete(frame.user_id)) this.emit("typing", { channelId: channel.id });
    const conversation = this.conversations.get(channel.id);
    if (conversation) {
      if (frame.client_id && conversation.pending.delete(frame.client_id)) {
        this.emit("pending", { channelId: channel.id });
      }
      const added = conversation.add([frame]);
      if (added.length) {
        this.emit("messages", { channelId: channel.id, added, older: false });
        // History counted the replies it holds; a live one adds to its parent's count.
        const parent = frame.reply_to ? conversation.byId(frame.reply_to) : undefined;
        if (parent) this.countReply(channel.id, parent, 1);
      }
    }
    if (channel.id === this.currentId) this.markReadSoon(channel.id);
    this.emit("channels");
  }

  countReply(channelId, parent, delta) {
    parent.reply_count = Math.max(0, (parent.reply_count ?? 0) + delta);
    this.emit("change", { channelId, frame: null, messages: [parent] });
  }

  // An edit, delete or reaction: it moves the channel's seq like a message (so the
  // read marker and a resume move past it), and changes its message if it is here.
  receiveChange(channel, frame) {
    channel.lastSeq = Math.max(channel.lastSeq, frame.seq);
    if (channel.id === this.currentId) this.markReadSoon(channel.id);
    const conversation = this.conversations.get(channel.id);
    const message = conversation?.byId(frame.message_id);
    // Kept as applied only once applied: an event for a message not loaded yet (its
    // page still on the way) is applied when the replay after that page repeats it.
    if (message && !conversation.changes.has(frame.seq)) {
      conversation.changes.add(frame.seq);
      const wasReply = message.deleted_at ? null : message.reply_to;
      const changed = applyChange(message, frame, this.me.id) ? [message] : [];
      this.emit("change", { channelId: channel.id, frame, messages: changed });
      const parent = wasReply && frame.type === "message_deleted" ? conversation.byId(wasReply) : undefined;
      if (parent) this.countReply(channel.id, parent, -1);
    } else if (conversation && !message) {
      this.emit("change", { channelId: channel.id, frame, messages: [] }); // the thread's copies
    }
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
      // Small again, or someone we cannot name yet: read the list once (or, read
      // lately, just that user).
      const last = this.presenceFetched.get(channel.id) ?? 0;
      const refetch = channel.id === this.currentId && Date.now() - last > PRESENCE_REFETCH_MS;
      if (refetch) this.fetchPresence(channel.id).catch(() => {});
      if (presence.users !== null) {
        this.applyPresence(presence, frame);
        if (!refetch && frame.status === "online") this.learnUser(frame.user_id, channel.id);
      }
    } else {
      this.applyPresence(presence, frame);
    }
    this.emit("presence", { channelId: channel.id });
  }

  // A user's name, read once (the presence frame carries only the id).
  learnUser(userId, channelId) {
    if (this.users.has(userId) || this.learning.has(userId)) return;
    this.learning.add(userId);
    this.api
      .user(userId)
      .then((user) => {
        this.users.set(user.id, user);
        this.emit("presence", { channelId });
      })
      .catch(() => {})
      .finally(() => this.learning.delete(userId));
  }

  applyPresence(presence, frame) {
    if (frame.status === "online") {
      presence.users.set(frame.user_id, this.users.get(frame.user_id) ?? { id: frame.user_id });
    } else {
      presence.users.delete(frame.user_id);
    }
  }

  mutedChanged(channel, untilMs) {
    const was = this.isMuted(channel);
    channel.mutedUntil = untilMs;
    this.emit("muted", { channelId: channel.id });
    const now = this.isMuted(channel);
    if (now && !was) this.notice(`You are muted in ${channelTitle(channel)} until ${formatTime(new Date(untilMs).toISOString())}.`);
    if (was && !now) this.notice(`You can write in ${channelTitle(channel)} again.`);
  }

  // A `muted` refusal answers the send (or typing) frames sent since the mute held:
  // every message of the channel not acknowledged yet was refused, and is not
  // re-sent. The error frame says until when.
  receiveMuted(channel, frame) {
    const until = Date.parse(frame.errors?.[0]?.until ?? "");
    channel.mutedUntil = Number.isNaN(until) ? Date.now() : until;
    this.emit("muted", { channelId: channel.id });
    const conversation = this.conversations.get(channel.id);
    let refused = 0;
    for (const item of conversation?.pending.values() ?? []) {
      if (item.status !== "sending") continue;
      item.status = "refused";
      this.socket.forget(item.clientId);
      refused += 1;
    }
    if (refused) {
      this.emit("pending", { channelId: channel.id });
      this.notice(`Not sent: you are muted in ${channelTitle(channel)}.`);
    }
  }

  receiveError(channel, frame) {
    if (frame.code === "not_a_member") {
      this.dropChannel(channel.id);
      this.notice(`You are no longer a member of ${channelTitle(channel)}.`);
      this.emit("channels");
    } else if (frame.code === "muted") {
      this.receiveMuted(channel, frame);
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
