/**
 * The browser client of the `realtime` Django app: protocol 1 (docs/protocol.md).
 *
 * A dependency-free ES module, served as is by Django's staticfiles; types in realtime.d.ts
 * beside it; the guide is docs/client.md.
 *
 *     import { connect } from "realtime";           // {% realtime_client %} maps the name
 *     const rt = connect();
 *     const sub = rt.subscribe("chat:42", { since: 0, onEvent: (e) => show(e) });
 *     await sub.publish("message.created", { text: "hi" });
 *
 * What it does for you: reconnects with exponential backoff and full jitter; resumes every
 * stream exactly (since/epoch) and drops duplicates; repairs a gap by resubscribing; tells
 * you when a stream cannot be recovered; heartbeats from a worker so hidden tabs stay alive;
 * falls back to Server-Sent Events plus HTTP when WebSocket cannot connect, and tries
 * WebSocket again later; queues publishes while disconnected, each with an idempotency key
 * so a publish re-sent after a reconnect is stored once.
 */

export const PROTOCOL = 1;

const SUBPROTOCOL = "realtime.v1";
const TICKET_SUBPROTOCOL_PREFIX = "realtime.ticket.";
const CLIENT_ID_KEY = "realtime:client-id";
const CONFIG_ELEMENT_ID = "realtime-config";
// Close codes (docs/protocol.md#close-codes) and the ones this client uses for itself.
const CLOSE_NORMAL = 1000;
const CLOSE_GOING_AWAY = 1001;
const CLOSE_UNAUTHORIZED = 4401;
const CLOSE_RATE_LIMITED = 4429;
const CLOSE_SILENT = 4000; // local: no frame for twice the heartbeat interval
const CLOSE_CONNECT_TIMEOUT = 4001; // local: no welcome within connectTimeout

/** Defaults of every option of {@link connect}; see docs/client.md. */
export const DEFAULTS = Object.freeze({
  url: undefined, // origin of the server; default: the page's (location.origin)
  prefix: "/realtime/", // where the app is mounted on that origin
  transports: ["websocket", "sse"], // in order of preference
  backoff: Object.freeze({ base: 500, cap: 30000, maxAttempts: Infinity, stableAfter: 5000 }),
  connectTimeout: 10000, // ms from opening to the welcome frame
  fallbackAfter: 2, // WebSocket attempts that fail before opening, then try SSE
  upgrade: Object.freeze({ after: 5000, cap: 300000 }), // on SSE: when to retry WebSocket
  maxQueue: 100, // publishes held while disconnected
  rateLimit: Object.freeze({ rate: 40, burst: 80 }), // frames/s sent; below the server's 50/100
  clientId: undefined, // anonymous presence key; default: one per browser in localStorage
  csrfToken: undefined, // string or () => string; default: read the CSRF cookie
  csrfCookieName: "csrftoken",
  csrfHeaderName: "X-CSRFToken",
  ticket: undefined, // () => ticket | Promise<ticket>, or true to POST {prefix}ticket/
  workerTimers: true, // heartbeat timer in a worker (hidden tabs throttle page timers)
  random: Math.random, // the jitter's source; tests pin it
  debug: false,
});

/** An error with a stable `code` (the protocol's error codes, plus the client's own). */
const utf8 = new TextEncoder();

export class RealtimeError extends Error {
  constructor(code, message, detail = {}) {
    super(message || code);
    this.name = "RealtimeError";
    this.code = code;
    Object.assign(this, detail);
  }
}

/** The delay before retry number `attempt` (0 for the first): full jitter, capped. */
export function backoffDelay(attempt, { base, cap }, random = Math.random) {
  return Math.floor(random() * Math.min(cap, base * 2 ** attempt));
}

/** A resume cursor (docs/protocol.md#resume-cursors) from `[stream, epoch, seq]` entries. */
export function encodeCursor(entries) {
  return `1.${base64url(new TextEncoder().encode(JSON.stringify([...entries])))}`;
}

/** The `[stream, epoch, seq]` entries of a resume cursor. */
export function decodeCursor(cursor) {
  if (!cursor.startsWith("1.")) throw new RealtimeError("invalid_cursor", "Not a cursor.");
  const body = cursor.slice(2).replaceAll("-", "+").replaceAll("_", "/");
  const binary = atob(body + "=".repeat((4 - (body.length % 4)) % 4));
  return JSON.parse(new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0))));
}

/** Open a client; it connects at once and reconnects until `close()`. */
export function connect(options = {}) {
  return new RealtimeClient(options);
}

// --------------------------------------------------------------------------------------
// Helpers
// --------------------------------------------------------------------------------------

const clock = () => performance.now();

function base64url(bytes) {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

function randomId(bytes = 16) {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

function readCookie(name) {
  for (const part of document.cookie ? document.cookie.split(";") : []) {
    const [key, ...value] = part.trim().split("=");
    if (key === name) return decodeURIComponent(value.join("="));
  }
  return null;
}

function pageConfig() {
  const element = typeof document !== "undefined" && document.getElementById(CONFIG_ELEMENT_ID);
  if (!element) return {};
  try {
    return JSON.parse(element.textContent) || {};
  } catch {
    return {};
  }
}

function resolveOptions(options) {
  const config = pageConfig();
  const merged = { ...DEFAULTS, ...config, ...options };
  for (const group of ["backoff", "upgrade", "rateLimit"]) {
    merged[group] = { ...DEFAULTS[group], ...(config[group] || {}), ...(options[group] || {}) };
  }
  merged.url = (merged.url || location.origin).replace(/\/+$/, "");
  merged.prefix = `/${merged.prefix.replace(/^\/+|\/+$/g, "")}/`.replace("//", "/");
  const unknown = merged.transports.filter((t) => t !== "websocket" && t !== "sse");
  if (!merged.transports.length || unknown.length) {
    throw new RealtimeError("invalid_option", 'transports: a list of "websocket" and "sse".');
  }
  return merged;
}

function storedClientId() {
  try {
    let id = localStorage.getItem(CLIENT_ID_KEY);
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(id || "")) {
      id = randomId();
      localStorage.setItem(CLIENT_ID_KEY, id);
    }
    return id;
  } catch {
    return randomId(); // storage blocked: one member per page
  }
}

/** on/off/once; a handler that throws is reported without stopping the others. */
class Emitter {
  #handlers = new Map();

  on(type, handler) {
    if (!this.#handlers.has(type)) this.#handlers.set(type, new Set());
    this.#handlers.get(type).add(handler);
    return () => this.off(type, handler);
  }

  off(type, handler) {
    this.#handlers.get(type)?.delete(handler);
  }

  once(type, handler) {
    const off = this.on(type, (...args) => {
      off();
      handler(...args);
    });
    return off;
  }

  _emit(type, ...args) {
    for (const handler of [...(this.#handlers.get(type) || [])]) {
      try {
        handler(...args);
      } catch (error) {
        queueMicrotask(() => {
          throw error; // the application's bug: show it, but keep the client going
        });
      }
    }
  }
}

/** A deferred promise whose rejection is not reported as unhandled if nobody awaits it. */
function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((yes, no) => {
    resolve = yes;
    reject = no;
  });
  promise.catch(() => {});
  return { promise, resolve, reject };
}

// Page timers in hidden tabs are throttled, down to once a minute in Chrome after five
// minutes: too slow for a 15 s heartbeat. A dedicated worker's timers are not, and each of
// its messages wakes the page. Where workers are unavailable (or a CSP forbids blob:
// workers) a plain interval does the job while the tab is visible.
const TICKER_SOURCE =
  "let t=0;onmessage=(e)=>{clearInterval(t);t=e.data>0?setInterval(()=>postMessage(0),e.data):0};";

class Ticker {
  constructor(callback, useWorker) {
    this.callback = callback;
    this.useWorker = useWorker && typeof Worker === "function";
    this.kind = null; // "worker" or "timer" once started
    this.interval = 0;
    this._worker = null;
    this._url = null;
    this._timer = 0;
  }

  start(ms) {
    this.stop();
    this.interval = ms;
    if (this.useWorker && !this._worker) {
      try {
        this._url = URL.createObjectURL(new Blob([TICKER_SOURCE], { type: "text/javascript" }));
        this._worker = new Worker(this._url);
        this._worker.onmessage = () => this.callback();
        this._worker.onerror = () => {
          this.useWorker = false;
          this._dropWorker();
          if (this.interval) this._useTimer(this.interval);
        };
      } catch {
        this.useWorker = false;
        this._dropWorker();
      }
    }
    if (this._worker) {
      this.kind = "worker";
      this._worker.postMessage(ms);
    } else {
      this._useTimer(ms);
    }
  }

  stop() {
    this.interval = 0;
    clearInterval(this._timer);
    this._worker?.postMessage(0);
  }

  destroy() {
    this.stop();
    this._dropWorker();
  }

  _useTimer(ms) {
    this.kind = "timer";
    clearInterval(this._timer);
    this._timer = setInterval(this.callback, ms);
  }

  _dropWorker() {
    this._worker?.terminate();
    this._worker = null;
    if (this._url) URL.revokeObjectURL(this._url);
    this._url = null;
  }
}

// --------------------------------------------------------------------------------------
// Transports: one connection attempt each. They report welcome, frames, activity and
// close to their owner; close() ends one silently.
// --------------------------------------------------------------------------------------

class WebSocketTransport {
  constructor(url, protocols, owner) {
    this.kind = "websocket";
    this.owner = owner;
    this.welcomed = false;
    this.done = false;
    this.ws = new WebSocket(url, protocols);
    this.ws.onmessage = (message) => this._message(message);
    this.ws.onclose = (close) => this._end({ code: close.code, reason: close.reason });
    this.ws.onerror = () => {}; // a close event follows with the details there are
  }

  _message({ data }) {
    if (this.done || typeof data !== "string") return;
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    this.owner.activity(this);
    if (frame?.type === "batch" && Array.isArray(frame.frames)) {
      // Several frames in one message (docs/protocol.md#batch, asked for with ?batch=1):
      // each is handled, and counted for flow control, as if it had come alone.
      const { frames } = frame;
      for (let i = 0; i < frames.length && !this.done; i++) {
        this._frame(frames[i], i < frames.length - 1);
      }
    } else {
      this._frame(frame, false);
    }
  }

  /** One server frame; `more`: others of the same batch follow it at once. */
  _frame(frame, more) {
    if (!frame || typeof frame !== "object") return;
    if (!this.welcomed && frame.type === "welcome") {
      this.welcomed = true;
      this.owner.welcome(this, frame);
    } else {
      this.owner.frame(this, frame, more);
    }
  }

  _end(info) {
    if (this.done) return;
    this.done = true;
    this.owner.closed(this, { ...info, opened: this.welcomed });
  }

  send(frame) {
    if (this.done || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  close(code = CLOSE_NORMAL, reason = "") {
    this.done = true;
    try {
      this.ws.close(code, reason);
    } catch {
      this.ws.close();
    }
  }
}

// Server-Sent Events read with fetch rather than EventSource: the client sees the HTTP
// status and the error body of a refusal, sees the keep-alive comments (so it can tell a
// silent connection from a quiet one), can send a ticket header, and reconnects with its
// own backoff instead of EventSource's fixed, unjittered retry.
class EventStreamTransport {
  constructor(url, headers, owner) {
    this.kind = "sse";
    this.owner = owner;
    this.welcomed = false;
    this.done = false;
    this.abort = new AbortController();
    this._event = { data: [], name: "" };
    this._run(url, headers);
  }

  async _run(url, headers) {
    let response;
    try {
      response = await fetch(url, {
        headers: { Accept: "text/event-stream", ...headers },
        credentials: "same-origin",
        cache: "no-store",
        signal: this.abort.signal,
      });
    } catch (error) {
      this._end({ code: 1006, reason: String(error?.message || error) });
      return;
    }
    if (!response.ok || !response.body) {
      let error = null;
      try {
        error = (await response.json()).error || null;
      } catch {
        // not our JSON: a proxy's page
      }
      this._end({ code: 1006, status: response.status, error, reason: error?.code || "" });
      return;
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.done) break;
        this.owner.activity(this);
        buffer += value;
        const lines = buffer.split(/\r\n|\r|\n/);
        buffer = lines.pop();
        for (const line of lines) this._line(line);
      }
    } catch (error) {
      this._end({ code: 1006, reason: String(error?.message || error) });
      return;
    }
    this._end({ code: 1006, reason: "the event stream ended" });
  }

  _line(line) {
    if (this.done) return;
    const event = this._event;
    if (line === "") {
      if (event.data.length) this._dispatch(event.name, event.data.join("\n"));
      this._event = { data: [], name: "" };
      return;
    }
    if (line.startsWith(":")) return; // keep-alive comment: activity() already saw it
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "data") event.data.push(value);
    else if (field === "event") event.name = value;
  }

  _dispatch(name, data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (name === "realtime.welcome" && !this.welcomed) {
      this.welcomed = true;
      this.owner.welcome(this, frame);
    } else {
      this.owner.frame(this, frame);
    }
  }

  _end(info) {
    if (this.done) return;
    this.done = true;
    this.abort.abort();
    this.owner.closed(this, { ...info, opened: this.welcomed });
  }

  send() {
    return false;
  }

  close() {
    this.done = true;
    this.abort.abort();
  }
}

// --------------------------------------------------------------------------------------
// Presence of one subscription
// --------------------------------------------------------------------------------------

/** Who is on a stream: `members` (key -> {key, metas}), kept current from presence frames. */
export class Presence extends Emitter {
  constructor(subscription) {
    super();
    this.subscription = subscription;
    this.members = new Map();
    this.count = null; // {members, connections} on counts-only streams
    this.ref = null; // this connection's entry in its member's metas, once joined
    this.meta = null; // what we joined with (and rejoin with after a reconnect), or null
    this._waiters = [];
  }

  /** Join with `meta` (or replace it); resolves with this connection's ref. */
  join(meta = {}) {
    if (meta === null || typeof meta !== "object" || Array.isArray(meta)) {
      return Promise.reject(new RealtimeError("invalid_presence", "meta must be an object."));
    }
    const promise = this._want(meta);
    this.subscription.client._presence(this.subscription, meta);
    return promise;
  }

  /** Same as join(): the metadata of a joined connection can be replaced at any time. */
  update(meta) {
    return this.join(meta);
  }

  /** Leave now (others see it at once, without the grace period of a closed connection). */
  leave() {
    this.meta = null;
    this.ref = null;
    this._settle(null, new RealtimeError("left", "Left before the join completed."));
    return this.subscription.client._presence(this.subscription, null);
  }

  /** The members as an array. */
  list() {
    return [...this.members.values()];
  }

  get joined() {
    return this.meta !== null;
  }

  _want(meta) {
    this.meta = meta;
    const waiter = deferred();
    this._waiters.push(waiter);
    return waiter.promise;
  }

  _settle(ref, error) {
    const waiters = this._waiters.splice(0);
    for (const waiter of waiters) (error ? waiter.reject(error) : waiter.resolve(ref));
  }

  _frame(frame) {
    const kind = frame.type.slice("presence.".length);
    if (kind === "state") {
      this.ref = frame.ref;
      this.members = new Map(
        Object.entries(frame.members).map(([key, value]) => [key, { key, metas: value.metas }]),
      );
      this._settle(frame.ref);
      this._emit("sync", this.members);
    } else if (kind === "join" || kind === "update") {
      const previous = this.members.get(frame.key);
      const member = { key: frame.key, metas: frame.metas };
      this.members.set(frame.key, member);
      this._emit(previous && kind === "update" ? "update" : "join", member, previous);
    } else if (kind === "leave") {
      const member = this.members.get(frame.key) || { key: frame.key, metas: [] };
      this.members.delete(frame.key);
      this._emit("leave", member);
    } else if (kind === "count") {
      this.count = { members: frame.members, connections: frame.connections };
      this._emit("count", this.count);
    } else {
      return;
    }
    this._emit("change", this);
  }
}

// --------------------------------------------------------------------------------------
// Subscriptions
// --------------------------------------------------------------------------------------

/**
 * One stream: its position (epoch, seq), its handlers and its presence.
 *
 * Events: "*" (every event), an event type such as "message.created", and the client's own
 * "realtime.subscribed", "realtime.reset", "realtime.snapshot", "realtime.gap" and
 * "realtime.error" (names the protocol reserves, so they never clash with an event type).
 */
export class Subscription extends Emitter {
  constructor(client, stream, options = {}) {
    super();
    this.client = client;
    this.stream = stream;
    this.epoch = options.epoch ?? null;
    this.seq = options.since ?? null; // last seq delivered; null: start live
    this.state = "pending"; // "active" after the first subscribed; "closed" at the end
    this.presence = new Presence(this);
    this.recovered = null;
    this.duplicates = 0; // events dropped because they were already delivered
    this._floating = false; // after recovered: false, the next event starts the position
    this._syncing = null; // id of a resubscribe after a gap; events wait for its reply
    this._lost = false; // the position was lost on our side: treat the next subscribed as such
    this._ready = deferred();
    this.ready = this._ready.promise;
    for (const [option, type] of [
      ["onEvent", "*"],
      ["onSubscribed", "realtime.subscribed"],
      ["onReset", "realtime.reset"],
      ["onSnapshot", "realtime.snapshot"],
      ["onError", "realtime.error"],
    ]) {
      if (typeof options[option] === "function") this.on(type, options[option]);
    }
  }

  /** Where this subscription is: send it back as {since, epoch} to resume elsewhere. */
  get position() {
    return { epoch: this.epoch, seq: this._floating ? 0 : this.seq };
  }

  /** Publish on this stream; resolves with {seq, duplicate} when the server acknowledged. */
  publish(event, data = null, options = {}) {
    return this.client.publish(this.stream, event, data, options);
  }

  /** Stop receiving (and leave presence). */
  unsubscribe() {
    return this.client._unsubscribe(this);
  }

  // --- called by the client -----------------------------------------------------------
  _subscribeFrame(id) {
    const frame = { type: "subscribe", id, stream: this.stream };
    if (this.seq !== null) {
      frame.since = this._floating ? 0 : this.seq;
      if (this.epoch !== null) frame.epoch = this.epoch;
    }
    if (this.presence.meta) frame.presence = this.presence.meta;
    return frame;
  }

  _subscribed(frame) {
    if (this._syncing !== null && frame.id !== this._syncing) return; // the old one's
    this._syncing = null;
    const held = (this.seq !== null && this.seq > 0 && !this._floating) || this._lost;
    const recovered = frame.recovered && !this._lost;
    this._lost = false;
    if (this.seq === null) {
      this.seq = frame.seq; // live from the head
      this._floating = false;
    } else if (!recovered) {
      this.seq = 0;
      this._floating = true;
    }
    this.epoch = frame.epoch;
    this.recovered = recovered;
    const info = { stream: this.stream, epoch: frame.epoch, head: frame.seq, recovered };
    if (this.state === "pending") this.state = "active";
    this._emit("realtime.subscribed", info);
    if (!recovered && held) this._emit("realtime.reset", info);
    this._ready.resolve(info);
  }

  /** Returns false when the event shows a gap the client must repair. */
  _event(frame) {
    if (this._syncing !== null) return true;
    if (frame.seq === undefined) {
      this._deliver(frame); // ephemeral: no position
      return true;
    }
    if (this._floating || this.seq === null) {
      this._floating = false;
    } else if (frame.seq <= this.seq) {
      this.duplicates += 1;
      return true;
    } else if (frame.seq !== this.seq + 1) {
      this._emit("realtime.gap", { stream: this.stream, expected: this.seq + 1, got: frame.seq });
      return false;
    }
    this.seq = frame.seq;
    this._deliver(frame);
    return true;
  }

  _snapshot(frame) {
    if (this._syncing !== null) return;
    this.seq = Math.max(this._floating ? 0 : this.seq || 0, frame.seq);
    this._floating = false;
    this._emit("realtime.snapshot", { stream: this.stream, seq: frame.seq, data: frame.data });
  }

  _deliver(frame) {
    const event = { stream: frame.stream, seq: frame.seq, event: frame.event, data: frame.data };
    event.ts = frame.ts;
    if (frame.seq === undefined) event.ephemeral = true;
    this._emit("*", event);
    this._emit(frame.event, event);
  }

  _fail(error) {
    this.state = "closed";
    this._ready.reject(error);
    this.presence._settle(null, error);
    this._emit("realtime.error", error);
  }
}

// --------------------------------------------------------------------------------------
// The client
// --------------------------------------------------------------------------------------

/** One connection to the server, kept open, over WebSocket or SSE; see {@link connect}. */
export class RealtimeClient extends Emitter {
  constructor(options = {}) {
    super();
    this.options = resolveOptions(options);
    this.clientId =
      this.options.clientId === undefined ? storedClientId() : this.options.clientId || null;
    this.state = "idle";
    this.transport = null; // "websocket" or "sse" while open
    this.connectionId = null;
    this.subscriptions = new Map();
    this.heartbeat = null; // seconds, from welcome
    this.maxFrame = null; // bytes: the largest frame the server accepts, from welcome
    this._conn = null; // the current transport object (connecting or open)
    this._open = false;
    this._attempt = 0; // failed attempts in a row: the backoff exponent
    this._wsFailures = 0; // WebSocket attempts in a row that never opened
    this._upgradeFailures = 0;
    this._probe = null; // a WebSocket tried while on SSE
    this._nextId = 1;
    this._replies = new Map(); // frame id -> what to do with the reply
    this._queue = []; // publishes waiting for a connection
    this._inflight = new Map(); // WebSocket publishes sent, by frame id, until their ack
    this._outbox = []; // frames waiting for the rate limit
    this._tokens = this.options.rateLimit.burst;
    this._refilled = clock();
    this._httpBusy = false;
    this._timers = {};
    this._lastReceived = 0;
    this._lastSent = 0;
    this._lastBeat = 0;
    this._ticker = new Ticker(() => this._tick(), this.options.workerTimers);
    this._onOnline = () => this._wake("online");
    this._onVisibility = () => {
      if (document.visibilityState === "visible") this._wake("visible");
    };
    addEventListener("online", this._onOnline);
    document.addEventListener("visibilitychange", this._onVisibility);
    this._setState("connecting", { attempt: 0 });
    // After the caller's synchronous subscribe() calls, so an SSE request names them all.
    queueMicrotask(() => this._connect("initial"));
  }

  // --- public API ------------------------------------------------------------------------

  /** Subscribe to `stream`: options since, epoch, presence (meta), onEvent, onSubscribed,
   *  onReset, onSnapshot, onError. */
  subscribe(stream, options = {}) {
    if (this.state === "closed") throw new RealtimeError("closed", "The client is closed.");
    if (this.subscriptions.has(stream)) {
      throw new RealtimeError("already_subscribed", `Already subscribed to ${stream}.`);
    }
    const sub = new Subscription(this, stream, options);
    this.subscriptions.set(stream, sub);
    if (options.presence) sub.presence._want(options.presence); // joins with the subscribe
    if (this._open && this.transport === "websocket") this._sendSubscribe(sub);
    else if (this.transport === "sse") this._reopenEventStream();
    return sub;
  }

  /** The active subscription to `stream`, if any. */
  subscription(stream) {
    return this.subscriptions.get(stream);
  }

  /**
   * Publish an event; resolves with {stream, seq, duplicate} once stored (seq null for an
   * ephemeral event). While disconnected, stored publishes wait in a bounded queue (rejected
   * with code "queue_full" beyond `maxQueue`); ephemeral ones are rejected ("disconnected").
   */
  publish(stream, event, data = null, { ephemeral = false, key } = {}) {
    if (this.state === "closed") {
      return Promise.reject(new RealtimeError("closed", "The client is closed."));
    }
    const entry = {
      stream,
      event,
      data,
      ephemeral: Boolean(ephemeral),
      key: ephemeral ? undefined : key || randomId(),
      id: null,
      ...deferred(),
    };
    if (!this._open) {
      if (entry.ephemeral) {
        return Promise.reject(
          new RealtimeError("disconnected", "Not connected: ephemeral events are not queued."),
        );
      }
      if (this._queue.length >= this.options.maxQueue) {
        return Promise.reject(
          new RealtimeError(
            "queue_full",
            `${this._queue.length} publishes are already waiting for the connection.`,
          ),
        );
      }
    }
    this._queue.push(entry);
    this._flushQueue();
    return entry.promise;
  }

  /** Connect now if waiting to retry (e.g. from a "Retry" button), or after `close()`. */
  reconnect() {
    if (this.state === "closed") {
      addEventListener("online", this._onOnline);
      document.addEventListener("visibilitychange", this._onVisibility);
      this._attempt = 0;
      this._setState("connecting", { attempt: 0 });
    }
    if (this._open || this._conn || this._connecting) return;
    clearTimeout(this._timers.reconnect);
    this._timers.reconnect = null;
    this._connect("manual");
  }

  /** Close for good: no reconnect; queued and unacknowledged publishes are rejected. */
  close() {
    if (this.state === "closed") return;
    this._shutdown({ code: CLOSE_NORMAL, reason: "closed" }, null);
  }

  // --- connecting ----------------------------------------------------------------------

  _log(...args) {
    if (this.options.debug) console.debug("[realtime]", ...args);
  }

  _setState(state, detail = {}) {
    const previous = this.state;
    this.state = state;
    this._emit("state", { state, previous, transport: this.transport, ...detail });
  }

  _useEventStream() {
    const { transports, fallbackAfter } = this.options;
    if (!transports.includes("sse")) return false;
    return !transports.includes("websocket") || this._wsFailures >= fallbackAfter;
  }

  _endpoint(path, params) {
    const base = this.options.url + this.options.prefix + path;
    const query = params?.toString();
    return query ? `${base}?${query}` : base;
  }

  async _ticketValue() {
    const { ticket } = this.options;
    if (!ticket) return null;
    if (typeof ticket === "function") return ticket();
    const response = await fetch(this._endpoint("ticket/"), {
      method: "POST",
      credentials: "same-origin",
      headers: this._csrfHeaders(),
    });
    if (!response.ok) return null; // not signed in: connect as the session (anonymous)
    return (await response.json()).ticket;
  }

  async _connect(reason) {
    if (this.state === "closed" || this._conn) return;
    const sse = this._useEventStream();
    this._emit("attempt", { attempt: this._attempt, transport: sse ? "sse" : "websocket", reason });
    this._log("connecting", sse ? "sse" : "websocket", reason);
    const token = (this._connecting = {});
    let ticket = null;
    try {
      ticket = await this._ticketValue();
    } catch (error) {
      this._log("ticket failed", error);
    }
    if (this._connecting !== token || this.state === "closed") return;
    this._connecting = null;
    if (sse) {
      if (!this.subscriptions.size) {
        // Nothing to receive: HTTP carries publishes; a stream opens with the first subscribe.
        this._idleEventStream();
        return;
      }
      this._conn = this._openEventStream(ticket);
    } else {
      this._conn = this._openWebSocket(ticket, this);
    }
    this._watch(this._conn);
  }

  _openWebSocket(ticket, owner) {
    const params = new URLSearchParams();
    if (this.clientId) params.set("client_id", this.clientId);
    params.set("batch", "1"); // frames may come several to a message: see WebSocketTransport
    const url = this._endpoint("ws/", params).replace(/^http/, "ws");
    const protocols = [SUBPROTOCOL];
    if (ticket) protocols.push(TICKET_SUBPROTOCOL_PREFIX + ticket);
    return new WebSocketTransport(url, protocols, owner);
  }

  /** What an SSE request asks for: its streams and presence (cursor aside). */
  _eventStreamParams() {
    const params = new URLSearchParams();
    let meta = null;
    for (const sub of this.subscriptions.values()) {
      params.append("stream", sub.stream);
      if (sub.presence.meta) {
        params.append("presence", sub.stream);
        meta = sub.presence.meta; // one meta per SSE request: the last joined
      }
    }
    if (meta) params.set("meta", JSON.stringify(meta));
    if (this.clientId) params.set("client_id", this.clientId);
    return params;
  }

  _openEventStream(ticket) {
    const params = this._eventStreamParams();
    const signature = params.toString();
    const cursor = [];
    for (const sub of this.subscriptions.values()) {
      if (sub.seq !== null) {
        cursor.push([sub.stream, sub.epoch ?? "", sub._floating ? 0 : sub.seq]);
      }
    }
    if (cursor.length && !this._dropCursor) params.set("last_event_id", encodeCursor(cursor));
    this._dropCursor = false;
    const headers = ticket ? { Authorization: `Ticket ${ticket}` } : {};
    const conn = new EventStreamTransport(this._endpoint("sse/", params), headers, this);
    conn.signature = signature;
    return conn;
  }

  _idleEventStream() {
    this.transport = "sse";
    this._announced = "sse";
    this._open = true;
    this.connectionId = null;
    this._setState("open", { attempt: this._attempt, idle: true });
    this._flushQueue();
    this._scheduleUpgrade();
  }

  /** Re-request the event stream after the set of streams or presence changed. */
  _reopenEventStream() {
    if (this._timers.reopen) return;
    this._timers.reopen = setTimeout(async () => {
      const token = (this._timers.reopen = {});
      let ticket = null;
      try {
        ticket = await this._ticketValue();
      } catch {
        // try without
      }
      if (this._timers.reopen !== token) return;
      this._timers.reopen = null;
      if (this.transport !== "sse" || !this._open) return;
      const old = this._conn;
      this._conn = null;
      old?.close();
      if (!this.subscriptions.size) return; // idle: nothing to receive
      this._watch((this._conn = this._openEventStream(ticket)));
    }, 0);
  }

  /** Give up on `conn` if it sends no welcome within connectTimeout. */
  _watch(conn) {
    clearTimeout(this._timers.connect);
    this._timers.connect = setTimeout(() => {
      if (this._conn === conn && !conn.welcomed) {
        conn.close(CLOSE_CONNECT_TIMEOUT, "no welcome");
        this.closed(conn, { code: CLOSE_CONNECT_TIMEOUT, reason: "timeout", opened: false });
      }
    }, this.options.connectTimeout);
  }

  // --- transport callbacks (also used by the upgrade probe) --------------------------------

  activity(conn) {
    if (conn === this._conn) this._lastReceived = clock();
  }

  welcome(conn, frame) {
    if (conn === this._probe) {
      this._adoptProbe(conn);
    } else if (conn !== this._conn) {
      return;
    }
    clearTimeout(this._timers.connect);
    const wasOpen = this._open;
    this._open = true;
    this.transport = conn.kind;
    this.connectionId = frame.connection_id;
    this.heartbeat = frame.heartbeat;
    this.maxFrame = frame.max_frame ?? null;
    // Flow control (docs/protocol.md#flow-control): acknowledge what arrived, so the server
    // keeps sending; the welcome frame is the first of this connection's frames.
    this._received = 1;
    this._acked = 0;
    this._ackEvery = Math.max(1, Math.min(100, Math.floor((frame.window?.messages ?? 200) / 4)));
    this._lastReceived = this._lastSent = this._lastBeat = clock();
    if (conn.kind === "websocket") {
      this._wsFailures = 0;
      this._upgradeFailures = 0;
      this._tokens = this.options.rateLimit.burst;
    }
    const ms = frame.heartbeat * 1000;
    this._ticker.start(Math.max(100, Math.min(ms / 4, 5000)));
    clearTimeout(this._timers.stable);
    this._timers.stable = setTimeout(() => {
      this._attempt = 0; // a stable connection: the next failure starts the backoff over
    }, this.options.backoff.stableAfter);
    const detail = { attempt: this._attempt, connectionId: this.connectionId };
    if (!wasOpen || this.state !== "open" || this._announced !== conn.kind) {
      this._announced = conn.kind;
      this._setState("open", detail);
    }
    if (conn.kind === "websocket") {
      for (const sub of this.subscriptions.values()) this._sendSubscribe(sub);
    } else {
      // Subscriptions or presence changed while this request was on its way: ask again.
      if (conn.signature !== this._eventStreamParams().toString()) this._reopenEventStream();
      this._scheduleUpgrade();
    }
    this._flushQueue();
  }

  /** A frame after the welcome; `more`: the rest of its batch follows at once, so the
   *  acknowledgement can wait for the batch's last frame (one `received` per batch). */
  frame(conn, frame, more = false) {
    if (conn !== this._conn) return;
    this._received += 1; // each frame of a batch counts, the batch itself does not
    this._handleFrame(frame);
    if (!more && this._received - this._acked >= this._ackEvery) this._acknowledge();
  }

  _acknowledge() {
    if (!this._open || this._received <= this._acked) return;
    this._acked = this._received;
    if (this.transport === "websocket") {
      if (this._conn.send({ type: "received", count: this._received })) this._lastSent = clock();
    } else {
      this._lastBeat = clock();
      this._postHeartbeat();
    }
  }

  closed(conn, info) {
    if (conn === this._probe) {
      this._probeFailed();
      return;
    }
    if (conn !== this._conn) return;
    this._conn = null;
    const { opened } = info;
    if (!opened) {
      if (conn.kind === "websocket") this._wsFailures += 1;
      // The event stream failed too: the server is down or unreachable, not just the
      // WebSocket upgrade. Try WebSocket first again next time.
      else if (!info.status || info.status >= 500) this._wsFailures = 0;
    }
    this._log("closed", conn.kind, info);
    this._disconnected(info);
  }

  // --- losing the connection -----------------------------------------------------------

  /** Closed for good (until reconnect()): pending publishes fail with `error` or "closed". */
  _shutdown(detail, error) {
    this._teardown(CLOSE_NORMAL, detail.reason);
    const failure = error || new RealtimeError("closed", "The client was closed.");
    for (const entry of this._queue) entry.reject(failure);
    this._queue = [];
    removeEventListener("online", this._onOnline);
    document.removeEventListener("visibilitychange", this._onVisibility);
    this._ticker.destroy();
    this._setState("closed", detail);
    if (error) this._emit("error", error);
  }

  _teardown(code, reason) {
    for (const name of Object.keys(this._timers)) clearTimeout(this._timers[name]);
    this._timers = {};
    this._connecting = null;
    this._ticker.stop();
    const conn = this._conn;
    this._conn = null;
    conn?.close(code, reason);
    this._probe?.close();
    this._probe = null;
    this._afterLoss();
  }

  /** Forget the connection: requeue unacknowledged publishes, drop pending replies. */
  _afterLoss() {
    this._open = false;
    this.transport = null;
    this.connectionId = null;
    this._announced = null;
    this._outbox = [];
    const inflight = [...this._inflight.values()].sort((a, b) => a.id - b.id);
    this._inflight.clear();
    const requeue = [];
    for (const entry of inflight) {
      entry.id = null;
      if (entry.ephemeral) entry.reject(new RealtimeError("disconnected", "Connection lost."));
      else requeue.push(entry); // re-sent with the same key: stored once
    }
    this._queue.unshift(...requeue);
    this._replies.clear();
    for (const sub of this.subscriptions.values()) sub._syncing = null;
  }

  _disconnected(info) {
    for (const name of ["connect", "stable", "reopen", "upgrade", "probe", "http", "outbox"]) {
      clearTimeout(this._timers[name]);
      this._timers[name] = null;
    }
    this._ticker.stop();
    this._probe?.close();
    this._probe = null;
    this._afterLoss();
    if (this.state === "closed") return;
    if (info.code === CLOSE_UNAUTHORIZED) {
      const error = new RealtimeError("revoked", "Access was revoked: sign in again.");
      this._shutdown({ code: info.code, reason: "revoked" }, error);
      return;
    }
    if (info.status) this._eventStreamRefused(info);
    if (this.state === "closed") return;
    this._scheduleReconnect(info);
  }

  _eventStreamRefused(info) {
    const { status, error } = info;
    const code = error?.code || `http_${status}`;
    if (status >= 500 || status === 429) return; // transient: back off and retry
    if (code === "invalid_cursor") {
      // Only a cursor too long for the server (hundreds of streams) gets here: start the
      // streams live and tell the application that their history was not recovered.
      this._dropCursor = true;
      for (const sub of this.subscriptions.values()) {
        sub._lost = sub.seq !== null;
        sub.seq = null;
        sub._floating = false;
      }
      return;
    }
    // A refused stream is named in the message (e.g. "Not allowed to subscribe 'x'."):
    // fail that subscription, as WebSocket would, and keep the others.
    const message = error?.message || "";
    const named = [...this.subscriptions.values()].filter((s) =>
      message.includes(`'${s.stream}'`),
    );
    if (named.length) {
      for (const sub of named) {
        this.subscriptions.delete(sub.stream);
        sub._fail(new RealtimeError(code, message, { stream: sub.stream }));
      }
      this._attempt = Math.max(0, this._attempt - 1); // not the server's fault
      return;
    }
    const fatal = new RealtimeError(code, message || `The event stream was refused (${status}).`);
    this._shutdown({ code: status, reason: code }, fatal);
  }

  _scheduleReconnect(info) {
    const { backoff } = this.options;
    if (info.code === CLOSE_RATE_LIMITED) this._attempt = Math.max(this._attempt, 4);
    if (this._attempt >= backoff.maxAttempts) {
      const error = new RealtimeError("max_attempts", "Gave up reconnecting.");
      this._shutdown({ code: info.code, reason: "max_attempts" }, error);
      return;
    }
    // A server going away (a deploy) closes every client at once: spread them wider.
    if (info.code === CLOSE_GOING_AWAY) this._attempt = Math.max(this._attempt, 2);
    const attempt = this._attempt;
    const delay = info.immediate ? 0 : backoffDelay(attempt, backoff, this.options.random);
    this._attempt += 1;
    this._setState("reconnecting", { attempt, delay, code: info.code, reason: info.reason });
    this._timers.reconnect = setTimeout(() => {
      this._timers.reconnect = null;
      this._connect(info.immediate ? info.reason : "retry");
    }, delay);
  }

  /** The connection is dead although the transport has not noticed: drop it, reconnect. */
  _dead(reason, immediate = false) {
    const conn = this._conn;
    if (!conn) return;
    this._log("dead:", reason);
    this._conn = null;
    conn.close(CLOSE_SILENT, reason);
    this._disconnected({ code: CLOSE_SILENT, reason, opened: true, immediate });
  }

  _wake(reason) {
    if (this.state === "closed") return;
    if (this._open && this._conn) {
      const silent = clock() - this._lastReceived;
      if (this.heartbeat && silent > 2 * this.heartbeat * 1000) this._dead(reason, true);
      else if (this.transport === "websocket") this._send({ type: "ping" }); // prove it
      return;
    }
    if (this._timers.reconnect) {
      clearTimeout(this._timers.reconnect);
      this._timers.reconnect = null;
      this._connect(reason);
    }
  }

  _tick() {
    if (!this._open || !this._conn || !this.heartbeat) return;
    const ms = this.heartbeat * 1000;
    const now = clock();
    if (now - this._lastReceived > 2 * ms) {
      this._dead("silent");
      return;
    }
    if (this._received > this._acked) this._acknowledge();
    if (this.transport === "websocket") {
      if (now - this._lastSent >= ms / 2) this._send({ type: "ping" });
    } else if (now - this._lastBeat >= ms && this._presenceJoined()) {
      this._lastBeat = now;
      this._postHeartbeat();
    }
  }

  _presenceJoined() {
    for (const sub of this.subscriptions.values()) if (sub.presence.meta) return true;
    return false;
  }

  async _postHeartbeat() {
    const conn = this._conn;
    const id = this.connectionId;
    if (!id) return;
    try {
      const response = await fetch(this._endpoint("heartbeat/"), {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ connection: id, received: this._received }),
      });
      if (response.status === 404 && conn === this._conn) this._dead("unknown_connection", true);
    } catch {
      // the stream itself will tell whether the server is gone
    }
  }

  // --- WebSocket upgrade while on SSE ------------------------------------------------------

  _scheduleUpgrade() {
    const { transports, upgrade } = this.options;
    if (!transports.includes("websocket") || this._timers.upgrade || this._probe) return;
    const ceiling = Math.min(upgrade.cap, upgrade.after * 2 ** this._upgradeFailures);
    const delay = Math.floor(ceiling * (0.5 + Math.random() / 2));
    this._timers.upgrade = setTimeout(() => this._tryUpgrade(), delay);
  }

  async _tryUpgrade() {
    this._timers.upgrade = null;
    if (this.transport !== "sse" || !this._open) return;
    let ticket = null;
    try {
      ticket = await this._ticketValue();
    } catch {
      // try without
    }
    if (this.transport !== "sse" || !this._open) return;
    this._log("trying WebSocket again");
    this._probe = this._openWebSocket(ticket, this);
    const probe = this._probe;
    this._timers.probe = setTimeout(() => {
      if (this._probe === probe) {
        probe.close();
        this._probeFailed();
      }
    }, this.options.connectTimeout);
  }

  _probeFailed() {
    clearTimeout(this._timers.probe);
    this._probe = null;
    this._upgradeFailures += 1;
    if (this.transport === "sse" && this._open) this._scheduleUpgrade();
  }

  _adoptProbe(probe) {
    clearTimeout(this._timers.probe);
    this._probe = null;
    const old = this._conn;
    this._conn = probe;
    old?.close();
    // Publishes sent over HTTP are awaited where they are; the WebSocket takes the queue.
    this._open = false;
  }

  // --- sending -----------------------------------------------------------------------------

  _id() {
    return this._nextId++;
  }

  _send(frame) {
    if (!this._open || this.transport !== "websocket") return false;
    if (frame.type === "ping") {
      // Pings skip the queue: they are what keeps the connection alive.
      if (this._conn.send(frame)) this._lastSent = clock();
      return true;
    }
    this._outbox.push(frame);
    this._drainOutbox();
    return true;
  }

  _drainOutbox() {
    const { rate, burst } = this.options.rateLimit;
    const now = clock();
    this._tokens = Math.min(burst, this._tokens + ((now - this._refilled) / 1000) * rate);
    this._refilled = now;
    while (this._outbox.length && this._tokens >= 1 && this._conn) {
      if (!this._conn.send(this._outbox[0])) return;
      this._outbox.shift();
      this._tokens -= 1;
      this._lastSent = now;
    }
    if (this._outbox.length && !this._timers.outbox) {
      this._timers.outbox = setTimeout(() => {
        this._timers.outbox = null;
        if (this._open) this._drainOutbox();
      }, 1000 / rate);
    }
  }

  _sendSubscribe(sub) {
    const id = this._id();
    const frame = sub._subscribeFrame(id);
    this._replies.set(id, { kind: "subscribe", sub, presence: Boolean(frame.presence) });
    this._send(frame);
    return id;
  }

  _presence(sub, meta) {
    if (sub.state === "closed" || !this.subscriptions.has(sub.stream)) {
      return Promise.reject(new RealtimeError("not_subscribed", "Not subscribed."));
    }
    if (this.transport === "sse") {
      this._reopenEventStream(); // the new request joins (or not) with the new meta
      return Promise.resolve();
    }
    if (!this._open) return Promise.resolve(); // the resubscribe carries it
    const id = this._id();
    const reply = { kind: "presence", sub, leave: meta === null, ...deferred() };
    this._replies.set(id, reply);
    this._send(
      meta === null
        ? { type: "presence", id, stream: sub.stream, leave: true }
        : { type: "presence", id, stream: sub.stream, meta },
    );
    return reply.promise;
  }

  _unsubscribe(sub) {
    if (this.subscriptions.get(sub.stream) !== sub) return Promise.resolve();
    this.subscriptions.delete(sub.stream);
    sub.state = "closed";
    sub.presence._settle(null, new RealtimeError("not_subscribed", "Unsubscribed."));
    if (this.transport === "sse") {
      this._reopenEventStream();
      return Promise.resolve();
    }
    if (!this._open) return Promise.resolve();
    const id = this._id();
    const reply = { kind: "unsubscribe", ...deferred() };
    this._replies.set(id, reply);
    this._send({ type: "unsubscribe", id, stream: sub.stream });
    return reply.promise;
  }

  /** A gap in a stream: ask for it again from the last seq delivered. */
  _repair(sub) {
    if (this.transport === "websocket") {
      this._send({ type: "unsubscribe", stream: sub.stream });
      sub._syncing = this._sendSubscribe(sub);
    } else if (this.transport === "sse") {
      sub._syncing = null;
      this._reopenEventStream();
    }
  }

  _flushQueue() {
    if (!this._open || !this._queue.length) return;
    if (this.transport === "websocket") {
      for (const entry of this._queue.splice(0)) {
        entry.id = this._id();
        const frame = { type: "publish", id: entry.id, stream: entry.stream, event: entry.event };
        frame.data = entry.data;
        if (entry.ephemeral) frame.ephemeral = true;
        else frame.key = entry.key;
        // The server closes the connection (1009) on a frame over its limit: sent, it would
        // be re-sent after every reconnect. Refused here instead, like the server would.
        const size = this.maxFrame && utf8.encode(JSON.stringify(frame)).length;
        if (size > this.maxFrame) {
          entry.reject(
            new RealtimeError(
              "frame_too_large",
              `This publish is ${size} bytes; the server accepts frames of ${this.maxFrame}.`,
            ),
          );
          continue;
        }
        this._inflight.set(entry.id, entry);
        this._send(frame);
      }
    } else {
      this._pumpHttp();
    }
  }

  _csrfHeaders() {
    const { csrfToken, csrfCookieName, csrfHeaderName } = this.options;
    const token = typeof csrfToken === "function" ? csrfToken() : csrfToken;
    const value = token || readCookie(csrfCookieName);
    return value ? { [csrfHeaderName]: value } : {};
  }

  /** Publishes over HTTP while on SSE, one at a time so they are stored in order. */
  async _pumpHttp() {
    if (this._httpBusy) return;
    this._httpBusy = true;
    try {
      while (this._open && this.transport === "sse" && this._queue.length) {
        const entry = this._queue[0];
        const outcome = await this._postPublish(entry);
        if (outcome === "retry") {
          if (this._open && this.transport === "sse" && !this._timers.http) {
            this._timers.http = setTimeout(() => {
              this._timers.http = null;
              this._pumpHttp();
            }, backoffDelay(2, this.options.backoff) + 250);
          }
          return;
        }
        if (this._queue[0] === entry) this._queue.shift();
      }
    } finally {
      this._httpBusy = false;
    }
    if (this._open && this.transport === "websocket") this._flushQueue(); // upgraded meanwhile
  }

  async _postPublish(entry) {
    if (entry.ephemeral && this._httpEphemeral === false) {
      entry.reject(
        new RealtimeError("unsupported", "This server cannot take ephemeral events over HTTP."),
      );
      return "done";
    }
    const body = { event: entry.event, data: entry.data };
    const headers = { "Content-Type": "application/json", ...this._csrfHeaders() };
    if (entry.ephemeral) body.ephemeral = true;
    else {
      body.key = entry.key;
      headers["Idempotency-Key"] = entry.key;
    }
    const url = this._endpoint(`api/streams/${encodeURIComponent(entry.stream)}/events/`);
    let response;
    try {
      response = await fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers,
        body: JSON.stringify(body),
      });
    } catch {
      if (entry.ephemeral) {
        entry.reject(new RealtimeError("disconnected", "The publish request failed."));
        return "done";
      }
      return "retry"; // network trouble: the same key makes a retry safe
    }
    let payload = null;
    try {
      payload = await response.json();
    } catch {
      // no JSON body
    }
    if (response.ok) {
      if (entry.ephemeral && payload?.seq != null && this._httpEphemeral !== false) {
        // A server whose HTTP API predates `ephemeral` stored the event: send no more.
        this._httpEphemeral = false;
        console.warn("[realtime] The server stored an ephemeral event sent over HTTP; "
          + "ephemeral events are not sent over the SSE fallback any more.");
      }
      entry.resolve({
        stream: entry.stream,
        seq: payload?.seq ?? null,
        duplicate: Boolean(payload?.duplicate),
      });
      return "done";
    }
    if ((response.status >= 500 || response.status === 429) && !entry.ephemeral) return "retry";
    const error = payload?.error || payload || {};
    const code = error.code || `http_${response.status}`;
    const message = error.message || error.detail || `Publishing failed (${response.status}).`;
    entry.reject(new RealtimeError(code, message, { status: response.status }));
    return "done";
  }

  // --- receiving -----------------------------------------------------------------------------

  /** One server frame (over either transport). */
  _handleFrame(frame) {
    const sub = frame.stream === undefined ? null : this.subscriptions.get(frame.stream);
    switch (frame.type) {
      case "event":
        if (sub && !sub._event(frame)) this._repair(sub);
        break;
      case "subscribed": {
        const reply = frame.id === null ? null : this._replies.get(frame.id);
        if (reply) reply.subscribed = true;
        if (reply && !reply.presence) this._replies.delete(frame.id);
        sub?._subscribed(frame);
        break;
      }
      case "snapshot":
        sub?._snapshot(frame);
        break;
      case "ack":
        this._ack(frame);
        break;
      case "unsubscribed": {
        const reply = this._replies.get(frame.id);
        this._replies.delete(frame.id);
        reply?.resolve?.();
        if (frame.reason === "revoked" && sub) {
          this.subscriptions.delete(sub.stream);
          sub._fail(new RealtimeError("revoked", "Access to this stream was revoked."));
        }
        break;
      }
      case "error":
        this._error(frame);
        break;
      case "pong":
        break;
      default:
        if (typeof frame.type === "string" && frame.type.startsWith("presence.") && sub) {
          if (frame.type === "presence.state") {
            for (const [id, reply] of this._replies) {
              if (reply.sub === sub && reply.presence) this._replies.delete(id);
            }
          }
          sub.presence._frame(frame);
        }
    }
  }

  _ack(frame) {
    const entry = this._inflight.get(frame.id);
    if (entry) {
      this._inflight.delete(frame.id);
      entry.resolve({ stream: entry.stream, seq: frame.seq ?? null, duplicate: !!frame.duplicate });
      return;
    }
    const reply = this._replies.get(frame.id);
    if (!reply) return;
    this._replies.delete(frame.id);
    if (reply.kind === "presence") {
      if (!reply.leave) reply.sub.presence.ref = frame.ref;
      if (!reply.leave) reply.sub.presence._settle(frame.ref);
      reply.resolve(frame.ref ?? null);
    }
  }

  _error(frame) {
    const error = new RealtimeError(frame.code, frame.message);
    const entry = this._inflight.get(frame.id);
    if (entry) {
      this._inflight.delete(frame.id);
      entry.reject(error);
      return;
    }
    const reply = frame.id === null ? null : this._replies.get(frame.id);
    if (!reply) {
      this._emit("error", error); // rate_limited, revoked, or an SSE presence join that failed
      return;
    }
    this._replies.delete(frame.id);
    if (reply.kind === "subscribe") {
      const { sub } = reply;
      if (!reply.subscribed) {
        // The subscription itself was refused.
        if (this.subscriptions.get(sub.stream) === sub) this.subscriptions.delete(sub.stream);
        sub._fail(error);
      } else {
        // Subscribed, but joining presence failed.
        sub.presence.meta = null;
        sub.presence._settle(null, error);
        sub._emit("realtime.error", error);
      }
    } else if (reply.kind === "presence") {
      if (!reply.leave) reply.sub.presence.meta = null;
      reply.sub.presence._settle(null, error);
      reply.reject(error);
      reply.sub._emit("realtime.error", error);
    } else {
      reply.reject?.(error);
    }
  }
}
