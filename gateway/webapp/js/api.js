// The REST API (/api/v1), in the envelope {status, message, data[, code, errors]}.
//
// A 429 is waited out (its Retry-After) and the request sent again, up to a
// bound: a refused request changed nothing on the server, so repeating it is
// safe, and the HTTP limit (10 per 30 s per address by default) is easy to meet
// when several people share one address.

const MAX_RATE_LIMIT_RETRIES = 3;
const RETRY_AFTER_CAP_SECONDS = 60;

export class ApiError extends Error {
  constructor(status, code, message, errors = []) {
    super(message);
    this.status = status;
    this.code = code;
    this.errors = errors;
  }

  // What to show a person: the message, then each offending field.
  describe() {
    const fields = this.errors.map((error) => `${error.field}: ${error.message}`);
    return [this.message, ...fields].join("\n");
  }
}

export class Api {
  constructor({ onWait = () => {} } = {}) {
    this.token = null;
    this.onWait = onWait; // called with the seconds a 429 asks to wait
  }

  async request(method, path, body) {
    const headers = { Accept: "application/json" };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    for (let attempt = 0; ; attempt += 1) {
      let response;
      try {
        response = await fetch(path, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          credentials: "omit",
          cache: "no-store",
        });
      } catch {
        throw new ApiError(0, "network", "The server cannot be reached. Check the connection.");
      }
      if (response.status === 429 && attempt < MAX_RATE_LIMIT_RETRIES) {
        const seconds = Math.min(
          RETRY_AFTER_CAP_SECONDS,
          Math.max(1, Number(response.headers.get("Retry-After")) || 1),
        );
        this.onWait(seconds);
        await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
        continue;
      }
      let envelope = null;
      try {
        envelope = await response.json();
      } catch {
        // not the envelope (a proxy's error page): described by the status alone
      }
      if (!response.ok || envelope?.status !== "success") {
        throw new ApiError(
          response.status,
          envelope?.code ?? "http_error",
          envelope?.message ?? `The server answered ${response.status}.`,
          Array.isArray(envelope?.errors) ? envelope.errors : [],
        );
      }
      return envelope.data;
    }
  }

  signup(fields) {
    return this.request("POST", "/api/v1/auth/signup", fields);
  }

  login(identity, password) {
    return this.request("POST", "/api/v1/auth/login", { identity, password });
  }

  logout() {
    return this.request("POST", "/api/v1/auth/logout");
  }

  myChannels() {
    return this.request("GET", "/api/v1/me/channels?limit=100");
  }

  allChannels() {
    return this.request("GET", "/api/v1/channels?limit=200");
  }

  createChannel(name, description, isPrivate = false) {
    return this.request("POST", "/api/v1/channels/new", { name, description, private: isPrivate });
  }

  joinChannel(channelId) {
    return this.request("POST", "/api/v1/channels/join", { channel_id: channelId });
  }

  leaveChannel(channelId) {
    return this.request("POST", "/api/v1/channels/leave", { channel_id: channelId });
  }

  // One page of history, newest first; `before` is the previous page's next_cursor.
  messages(channelId, before = null, limit = 50) {
    const query = new URLSearchParams({ limit: String(limit) });
    if (before !== null) query.set("before", String(before));
    return this.request("GET", `/api/v1/channels/${channelId}/messages?${query}`);
  }

  // One page of users (id order); the route has no search, so finding a username pages.
  users(offset, limit) {
    return this.request("GET", `/api/v1/users?limit=${limit}&offset=${offset}`);
  }

  user(userId) {
    return this.request("GET", `/api/v1/users/${userId}`);
  }

  members(channelId) {
    return this.request("GET", `/api/v1/channels/${channelId}/members?limit=100`);
  }

  invite(channelId, userId) {
    return this.request("POST", `/api/v1/channels/${channelId}/invitations`, { user_id: userId });
  }

  myInvitations() {
    return this.request("GET", "/api/v1/me/invitations?limit=100");
  }

  answerInvitation(channelId, accept) {
    return this.request("POST", `/api/v1/me/invitations/${channelId}/${accept ? "accept" : "decline"}`);
  }

  // The direct message with a user: created on the first ask, the same channel after.
  directMessage(userId) {
    return this.request("POST", "/api/v1/dm", { user_id: userId });
  }

  // A message's replies, oldest first; `afterSeq` is the previous page's next_cursor.
  replies(channelId, messageId, afterSeq = null) {
    const query = new URLSearchParams({ limit: "200" });
    if (afterSeq !== null) query.set("after_seq", String(afterSeq));
    return this.request("GET", `/api/v1/channels/${channelId}/messages/${messageId}/replies?${query}`);
  }

  presence(channelId) {
    return this.request("GET", `/api/v1/channels/${channelId}/presence`);
  }
}

// The claims of our own token (user_id, username, exp), for display only: the
// server checks the token on every call.
export function tokenClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
  } catch {
    return null;
  }
}
