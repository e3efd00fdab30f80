// The multiplexed socket (WS /api/v1/ws): the only module that knows its wire protocol.
//
// It keeps, across reconnects, what the person expects to hold: every channel it
// should be subscribed to, with the last seq seen in each, and every message sent
// but not yet acknowledged, with its client_id. After a drop it reconnects with
// capped exponential backoff and jitter, subscribes every channel again with
// `since` (the server replays what was missed, in order), and re-sends each
// pending message with the same client_id, which the server answers with the
// original's ack instead of storing it twice. Duplicates that a resume can still
// deliver (an ack and its message, a replay overlapping history) are the store's
// to drop: it keys messages by seq.
//
// The token travels as the `bearer` subprotocol, never in the URL, so no access
// log or browser history holds it.

const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 15_000;
// A gateway that is draining (1012) asks for a reconnect right away: only a
// little jitter, so its clients do not arrive at the other replica in one burst.
const RESTART_JITTER_MS = 500;
// Too many sockets or messages (4429): come back slower.
const TOO_MANY_MIN_MS = 5_000;
// Closes after which reconnecting cannot help: the credential is refused.
const UNAUTHORIZED = new Set([4401]);
// The socket itself refused (not one channel): on this socket that is the Origin check.
const ORIGIN_REFUSED = 4403;

let clientIds = 0;

function newClientId() {
  clientIds += 1;
  const random = globalThis.crypto?.randomUUID?.() ?? String(Math.random()).slice(2);
  return `w-${random}-${clientIds}`.slice(0, 64);
}

// Full delay for attempt n (0-based): half fixed, half random ("equal jitter"),
// so clients dropped together spread out but none retries at once in a loop.
export function backoffDelay(attempt, random = Math.random) {
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

export class MuxSocket extends EventTarget {
  constructor(token) {
    super();
    this.token = token;
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.stopped = false;
    this.state = "connecting";
    this.subscriptions = new Map(); // channel_id -> {since: number | null}
    this.live = new Set(); // channels subscribed on the current socket
    this.pending = new Map(); // client_id -> {channel_id, body}
    this.retrying = new Set(); // channels waiting out a rate limit before re-sending
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000, "bye");
    this.ws = null;
  }

  // Reconnect now instead of waiting out the backoff (the browser came back online).
  retryNow() {
    if (this.stopped || this.state !== "reconnecting") return;
    clearTimeout(this.timer);
    this.connect();
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/api/v1/ws`, ["bearer", this.token]);
    this.ws = ws;
    this.live.clear();
    this.setState("connecting");
    ws.addEventListener("open", () => {
      if (ws !== this.ws) return;
      this.setState("open");
      for (const [channelId, sub] of this.subscriptions) this.sendSubscribe(channelId, sub.since);
    });
    ws.addEventListener("message", (event) => {
      if (ws !== this.ws) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return; // the server sends JSON only; nothing else is worth acting on
      }
      this.receive(frame);
    });
    ws.addEventListener("close", (event) => {
      if (ws !== this.ws) return;
      this.ws = null;
      this.live.clear();
      if (this.stopped) return;
      if (UNAUTHORIZED.has(event.code)) {
        this.setState("closed");
        this.emit("unauthorized", { code: event.code });
        return;
      }
      if (event.code === ORIGIN_REFUSED) {
        // The page's origin is not in the server's ALLOWED_ORIGINS: no retry can help.
        this.setState("closed", {
          reason: "The server refuses this page's address. Open the app at the address the server is configured for (ALLOWED_ORIGINS).",
        });
        return;
      }
      this.scheduleReconnect(event.code);
    });
  }

  scheduleReconnect(code) {
    let delay = backoffDelay(this.attempt);
    if (code === 1012) delay = Math.round(Math.random() * RESTART_JITTER_MS);
    if (code === 4429) delay = Math.max(delay, TOO_MANY_MIN_MS);
    this.attempt += 1;
    this.setState("reconnecting", { delay, attempt: this.attempt, code });
    this.timer = setTimeout(() => this.connect(), delay);
  }

  setState(state, detail = {}) {
    this.state = state;
    this.emit("state", { state, ...detail });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  transmit(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  // Hold `channelId` on every socket from now on; replay after `since` when given.
  subscribe(channelId, since = null) {
    this.subscriptions.set(channelId, { since });
    this.sendSubscribe(channelId, since);
  }

  unsubscribe(channelId) {
    this.subscriptions.delete(channelId);
    this.live.delete(channelId);
    for (const [clientId, item] of this.pending) {
      if (item.channel_id === channelId) this.pending.delete(clientId);
    }
    this.transmit({ type: "unsubscribe", channel_id: channelId });
  }

  sendSubscribe(channelId, since) {
    const frame = { type: "subscribe", channel_id: channelId };
    if (since !== null && since !== undefined) frame.since = since;
    this.transmit(frame);
  }

  // The last seq seen in a channel, which a reconnect resumes after.
  lastSeq(channelId) {
    return this.subscriptions.get(channelId)?.since ?? null;
  }

  // Send a text message (answering the message `replyTo`, if given); returns its
  // client_id. Kept until acknowledged, and re-sent with the same client_id whenever
  // the channel is subscribed again.
  send(channelId, content, replyTo = null) {
    const clientId = newClientId();
    const item = { channel_id: channelId, body: { type: "text", content } };
    if (replyTo !== null) item.reply_to = replyTo;
    this.pending.set(clientId, item);
    if (this.live.has(channelId)) this.sendPending(clientId, item);
    return clientId;
  }

  // A send the server refused for good (the person is muted): never re-sent.
  forget(clientId) {
    this.pending.delete(clientId);
  }

  resendPending(channelId) {
    if (!this.live.has(channelId)) return;
    for (const [clientId, item] of this.pending) {
      if (item.channel_id === channelId) this.sendPending(clientId, item);
    }
  }

  sendPending(clientId, item) {
    this.transmit({ type: "send", ...item, client_id: clientId });
  }

  // An edit, delete or react frame, sent once (not kept: the person sees whether its
  // event came, and can repeat it), and only on a live subscription.
  change(frame) {
    if (!this.live.has(frame.channel_id)) return false;
    const withId = frame.type === "edit" ? { ...frame, client_id: newClientId() } : frame;
    return this.transmit(withId);
  }

  typing(channelId) {
    if (this.live.has(channelId)) this.transmit({ type: "typing", channel_id: channelId });
  }

  markRead(channelId, seq) {
    return this.transmit({ type: "read", channel_id: channelId, seq });
  }

  receive(frame) {
    const channelId = frame.channel_id;
    const sub = this.subscriptions.get(channelId);
    switch (frame.type) {
      case "subscribed":
        if (!sub) return;
        this.attempt = 0; // a subscription took: the connection is really back
        this.live.add(channelId);
        if (sub.since === null) sub.since = frame.last_seq;
        this.resendPending(channelId);
        break;
      case "message":
        if (sub && (sub.since === null || frame.seq > sub.since)) sub.since = frame.seq;
        if (frame.client_id) this.pending.delete(frame.client_id);
        break;
      case "message_edited":
      case "message_deleted":
      case "reaction":
        // Changes take their own seq in the channel's order: resume after them too.
        if (sub && (sub.since === null || frame.seq > sub.since)) sub.since = frame.seq;
        break;
      case "ack":
        this.pending.delete(frame.client_id);
        break;
      case "error":
        this.receiveError(frame, sub);
        break;
      default:
        break;
    }
    this.emit("frame", frame);
  }

  receiveError(frame, sub) {
    if (frame.code === "since_ahead" && sub) {
      // The channel's counter is behind what we saw (Redis lost writes): follow it.
      sub.since = frame.errors?.[0]?.last_seq ?? sub.since;
    } else if (frame.code === "rate_limited" && frame.channel_id && !this.retrying.has(frame.channel_id)) {
      // A refused send is not stored: send what is pending again once allowed
      // (same client_ids, so whatever did get through is not stored twice).
      this.retrying.add(frame.channel_id);
      setTimeout(() => {
        this.retrying.delete(frame.channel_id);
        this.resendPending(frame.channel_id);
      }, frame.retry_after_ms ?? BACKOFF_BASE_MS);
    } else if (frame.code === "not_a_member" && frame.channel_id) {
      this.subscriptions.delete(frame.channel_id);
      this.live.delete(frame.channel_id);
    }
  }
}
