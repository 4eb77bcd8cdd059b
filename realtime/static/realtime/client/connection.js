// The connection: keeps one connection to the server open, over WebSocket or SSE. Drives the
// state machine (state.js) through attempts, welcomes, losses and retries, as the policy
// (policy.js) says; detects dead connections and acknowledges what arrived (liveness.js, on
// the ticks of ticker.js); re-requests the event stream when its streams change; moves from
// SSE to WebSocket when that works again (upgrade.js). It knows nothing of subscriptions or
// publishes: it asks its owner, the client, through the small ConnectionOwner interface.

import {
  CLOSE_CONNECT_TIMEOUT,
  CLOSE_NORMAL,
  CLOSE_SILENT,
  RealtimeError,
  SUBPROTOCOL,
  TICKET_SUBPROTOCOL_PREFIX,
  restartDelay,
} from "./codes.js";
import { Liveness } from "./liveness.js";
import { Outbox } from "./outbox.js";
import { watchPage } from "./page.js";
import { ReconnectPolicy } from "./policy.js";
import { EventStreamTransport } from "./sse.js";
import { ConnectionState } from "./state.js";
import { Ticker } from "./ticker.js";
import { Upgrade } from "./upgrade.js";
import { WebSocketTransport } from "./websocket.js";

/** @import { HttpApi } from "./http.js" */
/** @import { Options } from "./options.js" */
/** @import { ConnectionStateName, PublicState } from "./state.js" */
/** @import { ClientFrame, CloseInfo, Frame, Transport, TransportFactory } from "./transport.js" */
/** @typedef {ReturnType<typeof setTimeout>} Timer */

/**
 * What the connection asks of, and reports to, its owner.
 * @typedef {object} ConnectionOwner
 * @property {(type: "state" | "attempt" | "error", detail: any) => void} announce
 *   tell the application (the client's "state", "attempt" and "error" events)
 * @property {(kind: "websocket" | "sse") => void} opened
 *   a connection was welcomed (or SSE opened with nothing to receive): subscribe, publish
 * @property {(frame: Frame) => void} frame a frame after the welcome
 * @property {() => void} lost the connection is gone: take back what was in flight
 * @property {(error: RealtimeError) => void} closed closed for good: fail what waits
 * @property {() => {params: URLSearchParams, signature: string} | null} eventStreamQuery
 *   the query of a new event-stream request (with the resume cursor), or null: none needed
 * @property {() => string} eventStreamSignature what that query asks for, cursor aside
 * @property {(info: CloseInfo) => {error?: RealtimeError, forgive?: boolean}} refused
 *   an event stream was refused: fatal (error), not the server's fault (forgive), or retry
 * @property {() => boolean} presenceJoined whether any stream joined presence
 */

/**
 * How the client makes transports and reads the time; the unit tests give their own.
 * @typedef {object} Internals
 * @property {TransportFactory} [transports]
 * @property {() => number} [now] milliseconds, monotonic
 */

/** @type {TransportFactory} */
export const BROWSER_TRANSPORTS = Object.freeze({
  websocket: (url, protocols, listener) => new WebSocketTransport(url, protocols, listener),
  sse: (url, headers, listener) => new EventStreamTransport(url, headers, listener),
});


export class Connection {
  #state = new ConnectionState();
  /** @type {Transport | null} the transport of the attempt under way, or the open one */
  #conn = null;
  /** @type {"websocket" | "sse" | null} the open transport's kind */
  #kind = null;
  /** @type {object | null} the attempt waiting for its ticket */
  #pending = null;
  /** @type {object | null} an event-stream request about to be made again */
  #reopen = null;
  /** What the open event stream asked for (SSE only). */
  #signature = "";
  /** @type {{connect?: Timer, stable?: Timer, reconnect?: Timer}} */
  #timers = {};
  /** @type {() => void} */
  #unwatch = () => {};

  /**
   * @param {Options} options
   * @param {string | null} clientId
   * @param {HttpApi} api
   * @param {ConnectionOwner} owner
   * @param {Internals} [internals]
   */
  constructor(options, clientId, api, owner, internals = {}) {
    this.options = options;
    this.clientId = clientId;
    this.api = api;
    this.owner = owner;
    this.transports = internals.transports || BROWSER_TRANSPORTS;
    this.now = internals.now || (() => performance.now());
    this.policy = new ReconnectPolicy(options);
    /** @type {string | null} the server's id of the open connection */
    this.connectionId = null;
    /** @type {number | null} seconds between heartbeats, from the welcome */
    this.heartbeat = null;
    /** @type {number | null} bytes: the largest frame the server accepts, from the welcome */
    this.maxFrame = null;
    this.liveness = new Liveness(this.now);
    this.ticker = new Ticker(() => this.#tick(), options.workerTimers);
    this.outbox = new Outbox(options.rateLimit, this.now, (frame) => {
      if (!this.#conn?.send(frame)) return false;
      this.liveness.sent();
      return true;
    });
    this.upgrade = new Upgrade(
      {
        onSse: () => this.transport === "sse",
        ticket: () => this.api.ticket(),
        openWebSocket: (ticket) => this.#openWebSocket(ticket),
        log: (...args) => this.#log(...args),
      },
      this.policy,
      options.connectTimeout,
    );
  }

  // --- what the client reads and calls ---------------------------------------------------

  /** @returns {PublicState} */
  get state() {
    return this.#state.public;
  }

  /** @returns {ConnectionStateName} the state machine's own state (for tests and debugging) */
  get phase() {
    return this.#state.name;
  }

  /** The open transport, else null. */
  get transport() {
    return this.#state.is("open") ? this.#kind : null;
  }

  get isOpen() {
    return this.#state.is("open");
  }

  /** Frames received on this connection, the welcome included. */
  get received() {
    return this.liveness.received;
  }

  /** Start: the first attempt runs after the current task (after the caller's subscribes). */
  start() {
    this.#unwatch = watchPage((reason) => this.#wake(reason));
    this.#enter("connecting", { attempt: 0 });
    queueMicrotask(() => this.#attempt("initial"));
  }

  /** Connect now if waiting to retry, or start again after close(). */
  reconnect() {
    if (this.#state.is("closed")) {
      this.#unwatch = watchPage((reason) => this.#wake(reason));
      this.policy.reset();
      this.#enter("connecting", { attempt: 0 });
    }
    if (this.#state.is("waiting")) {
      clearTimeout(this.#timers.reconnect);
      this.#timers.reconnect = undefined;
    }
    this.#attempt("manual");
  }

  /** Close for good (until reconnect()). */
  close() {
    if (this.#state.is("closed")) return;
    this.#shutdown({ code: CLOSE_NORMAL, reason: "closed" }, null);
  }

  /**
   * Send a frame over the open WebSocket: pings at once, others through the rate-limited
   * outbox. False when not open on WebSocket.
   * @param {ClientFrame} frame
   */
  send(frame) {
    if (this.transport !== "websocket") return false;
    if (frame.type === "ping") {
      // Pings skip the queue: they are what keeps the connection alive.
      if (this.#conn?.send(frame)) this.liveness.sent();
      return true;
    }
    this.outbox.push(frame);
    return true;
  }

  /** On SSE: request the event stream again, soon (its streams or presence changed). */
  reopenEventStream() {
    if (this.#reopen) return;
    const token = (this.#reopen = {});
    setTimeout(async () => {
      if (this.#reopen !== token) return; // lost or closed meanwhile
      let ticket = null;
      try {
        ticket = await this.api.ticket();
      } catch {
        // try without
      }
      if (this.#reopen !== token) return;
      this.#reopen = null;
      if (this.transport !== "sse") return;
      const old = this.#conn;
      this.#conn = null;
      old?.close();
      const query = this.owner.eventStreamQuery();
      if (!query) return; // idle: nothing to receive
      this.#watchWelcome((this.#conn = this.#openEventStream(ticket, query)));
    }, 0);
  }

  // --- TransportListener: what the transports (and the upgrade probe) report ----------------

  /** @param {Transport} conn */
  activity(conn) {
    if (conn === this.#conn) this.liveness.heard();
  }

  /**
   * @param {Transport} conn
   * @param {Frame} frame
   */
  welcome(conn, frame) {
    if (this.upgrade.isProbe(conn)) {
      // The WebSocket tried while on SSE works: it takes over, the event stream is closed.
      // Publishes sent over HTTP are awaited where they are; the WebSocket takes the queue.
      this.upgrade.adopted();
      const old = this.#conn;
      this.#conn = conn;
      old?.close();
    } else if (conn !== this.#conn) {
      return;
    }
    clearTimeout(this.#timers.connect);
    const announce = !this.#state.is("open") || this.#kind !== conn.kind;
    this.#kind = conn.kind;
    this.connectionId = frame.connection_id;
    this.heartbeat = frame.heartbeat;
    this.maxFrame = frame.max_frame ?? null;
    this.liveness.opened(frame.window?.messages);
    this.policy.opened(conn.kind);
    if (conn.kind === "websocket") this.outbox.refill();
    const ms = frame.heartbeat * 1000;
    this.ticker.start(Math.max(100, Math.min(ms / 4, 5000)));
    clearTimeout(this.#timers.stable);
    this.#timers.stable = setTimeout(() => this.policy.stable(), this.options.backoff.stableAfter);
    if (announce) {
      this.#enter("open", { attempt: this.policy.attempt, connectionId: this.connectionId });
    }
    if (conn.kind === "sse") {
      // Subscriptions or presence changed while this request was on its way: ask again.
      if (this.#signature !== this.owner.eventStreamSignature()) this.reopenEventStream();
      this.upgrade.schedule();
    }
    this.owner.opened(conn.kind);
  }

  /**
   * A frame after the welcome; `more`: the rest of its batch follows at once, so the
   * acknowledgement can wait for the batch's last frame (one `received` per batch).
   * @param {Transport} conn
   * @param {Frame} frame
   * @param {boolean} [more]
   */
  frame(conn, frame, more = false) {
    if (conn !== this.#conn) return;
    this.liveness.count();
    this.owner.frame(frame);
    if (!more && this.liveness.ackDue) this.#acknowledge();
  }

  /**
   * @param {Transport} conn
   * @param {CloseInfo} info
   */
  closed(conn, info) {
    if (this.upgrade.isProbe(conn)) {
      this.upgrade.failed();
      return;
    }
    if (conn !== this.#conn) return;
    this.#conn = null;
    if (!info.opened) this.policy.failedBeforeOpen(conn.kind, info.status);
    this.#log("closed", conn.kind, info);
    this.#lost(info);
  }

  // --- states ------------------------------------------------------------------------------

  /**
   * Go to `next` and announce it (the "state" event).
   * @param {ConnectionStateName} next
   * @param {object} detail
   * @param {PublicState} [previous] the state to report as previous (default: the current)
   */
  #enter(next, detail, previous) {
    const before = this.#state.to(next);
    const change = { state: this.#state.public, previous: previous ?? before };
    this.owner.announce("state", { ...change, transport: this.transport, ...detail });
  }

  /** @param {...any} args */
  #log(...args) {
    if (this.options.debug) console.debug("[realtime]", ...args);
  }

  // --- connecting --------------------------------------------------------------------------

  /**
   * Make a connection attempt (from "connecting", or "waiting" -> "reconnecting").
   * @param {string} reason what started it: initial, retry, online, visible, manual, ...
   */
  async #attempt(reason) {
    if (this.#state.is("waiting")) this.#state.to("reconnecting"); // "reconnecting" already
    else if (!this.#state.is("connecting") || this.#pending || this.#conn) return;
    const transport = this.policy.nextTransport();
    this.owner.announce("attempt", { attempt: this.policy.attempt, transport, reason });
    this.#log("connecting", transport, reason);
    const token = (this.#pending = {});
    let ticket = null;
    try {
      ticket = await this.api.ticket();
    } catch (error) {
      this.#log("ticket failed", error);
    }
    if (this.#pending !== token) return; // closed meanwhile
    this.#pending = null;
    if (transport === "sse") {
      const query = this.owner.eventStreamQuery();
      if (!query) {
        // Nothing to receive: HTTP carries publishes; a stream opens with the first subscribe.
        this.#openIdle();
        return;
      }
      this.#conn = this.#openEventStream(ticket, query);
    } else {
      this.#conn = this.#openWebSocket(ticket);
    }
    this.#watchWelcome(this.#conn);
  }

  /** @param {string | null} ticket */
  #openWebSocket(ticket) {
    const params = new URLSearchParams();
    if (this.clientId) params.set("client_id", this.clientId);
    params.set("batch", "1"); // frames may come several to a message: see websocket.js
    const url = this.api.endpoint("ws/", params).replace(/^http/, "ws");
    const protocols = [SUBPROTOCOL];
    if (ticket) protocols.push(TICKET_SUBPROTOCOL_PREFIX + ticket);
    return this.transports.websocket(url, protocols, this);
  }

  /**
   * @param {string | null} ticket
   * @param {{params: URLSearchParams, signature: string}} query
   */
  #openEventStream(ticket, { params, signature }) {
    this.#signature = signature;
    /** @type {Record<string, string>} */
    const headers = ticket ? { Authorization: `Ticket ${ticket}` } : {};
    return this.transports.sse(this.api.endpoint("sse/", params), headers, this);
  }

  /** Open on SSE without a request: nothing to receive yet. */
  #openIdle() {
    this.#kind = "sse";
    this.connectionId = null;
    this.#enter("open", { attempt: this.policy.attempt, idle: true });
    this.owner.opened("sse");
    this.upgrade.schedule();
  }

  /**
   * Give up on `conn` if it sends no welcome within connectTimeout.
   * @param {Transport} conn
   */
  #watchWelcome(conn) {
    clearTimeout(this.#timers.connect);
    this.#timers.connect = setTimeout(() => {
      if (this.#conn === conn && !conn.welcomed) {
        conn.close(CLOSE_CONNECT_TIMEOUT, "no welcome");
        this.closed(conn, { code: CLOSE_CONNECT_TIMEOUT, reason: "timeout", opened: false });
      }
    }, this.options.connectTimeout);
  }

  // --- losing the connection -----------------------------------------------------------------

  /**
   * The connection (or the attempt) is gone: retry after a backoff, or close for good.
   * @param {CloseInfo} info
   */
  #lost(info) {
    if (this.#state.is("closed")) return;
    const previous = this.#state.public;
    this.#stopTimers();
    if (this.policy.isFatal(info.code)) {
      const error = new RealtimeError("revoked", "Access was revoked: sign in again.");
      this.#shutdown({ code: info.code, reason: "revoked" }, error, previous);
      return;
    }
    // Out of "open" before the owner hears of it (its handlers may publish): announced
    // below, once the retry's delay is known.
    this.#state.to("waiting");
    this.#forget();
    if (info.status) {
      const verdict = this.owner.refused(info);
      if (verdict.error) {
        const detail = { code: info.status, reason: verdict.error.code };
        this.#shutdown(detail, verdict.error, previous);
        return;
      }
      if (verdict.forgive) this.policy.forgive();
    }
    // A draining server (1012) says when to come back: its delay replaces the backoff.
    const after = info.retryAfter ?? restartDelay(info.code, info.reason);
    const retry = this.policy.retry(info.code, info.immediate, after);
    if (!retry) {
      const error = new RealtimeError("max_attempts", "Gave up reconnecting.");
      this.#shutdown({ code: info.code, reason: "max_attempts" }, error, previous);
      return;
    }
    const { attempt, delay } = retry;
    this.owner.announce("state", {
      state: "reconnecting",
      previous,
      transport: null,
      ...{ attempt, delay, code: info.code, reason: info.reason },
    });
    this.#timers.reconnect = setTimeout(() => {
      this.#timers.reconnect = undefined;
      this.#attempt(info.immediate ? info.reason : "retry");
    }, delay);
  }

  /**
   * Closed for good (until reconnect()): what waits fails with `error` or "closed".
   * @param {{code: number, reason: string}} detail
   * @param {RealtimeError | null} error
   * @param {PublicState} [previous]
   */
  #shutdown(detail, error, previous) {
    const before = this.#state.to("closed");
    this.#stopTimers();
    this.#pending = null;
    const conn = this.#conn;
    this.#conn = null;
    conn?.close(CLOSE_NORMAL, detail.reason);
    this.#forget();
    this.owner.closed(error || new RealtimeError("closed", "The client was closed."));
    this.#unwatch();
    this.ticker.destroy();
    const change = { state: "closed", previous: previous ?? before, transport: null };
    this.owner.announce("state", { ...change, ...detail });
    if (error) this.owner.announce("error", error);
  }

  /** Stop every timer of the connection, and the upgrade. */
  #stopTimers() {
    clearTimeout(this.#timers.connect);
    clearTimeout(this.#timers.stable);
    clearTimeout(this.#timers.reconnect);
    this.#timers = {};
    this.#reopen = null;
    this.ticker.stop();
    this.upgrade.stop();
  }

  /** Forget the connection; the owner takes back what was in flight. */
  #forget() {
    this.#kind = null;
    this.connectionId = null;
    this.outbox.clear();
    this.owner.lost();
  }

  /**
   * The connection is dead although the transport has not noticed: drop it, reconnect.
   * @param {string} reason
   * @param {boolean} [immediate]
   */
  #dead(reason, immediate = false) {
    const conn = this.#conn;
    if (!conn) return;
    this.#log("dead:", reason);
    this.#conn = null;
    conn.close(CLOSE_SILENT, reason);
    this.#lost({ code: CLOSE_SILENT, reason, opened: true, immediate });
  }

  // --- liveness and flow control -----------------------------------------------------------

  /** @param {"online" | "visible"} reason */
  #wake(reason) {
    if (this.#state.is("open") && this.#conn) {
      if (this.heartbeat && this.liveness.silentFor(2 * this.heartbeat * 1000)) {
        this.#dead(reason, true);
      }
      else if (this.transport === "websocket") this.send({ type: "ping" }); // prove it
    } else if (this.#state.is("waiting")) {
      clearTimeout(this.#timers.reconnect);
      this.#timers.reconnect = undefined;
      this.#attempt(reason);
    }
  }

  #tick() {
    if (!this.#state.is("open") || !this.#conn || !this.heartbeat) return;
    const ms = this.heartbeat * 1000;
    const { liveness } = this;
    if (liveness.silentFor(2 * ms)) {
      this.#dead("silent");
      return;
    }
    if (liveness.unacknowledged) this.#acknowledge();
    if (this.transport === "websocket") {
      if (liveness.quietFor(ms / 2)) this.send({ type: "ping" });
    } else if (liveness.beatDue(ms) && this.owner.presenceJoined()) {
      liveness.beat();
      this.#postHeartbeat();
    }
  }

  #acknowledge() {
    if (!this.#state.is("open") || !this.liveness.unacknowledged) return;
    const count = this.liveness.acknowledge();
    if (this.transport === "websocket") {
      if (this.#conn?.send({ type: "received", count })) this.liveness.sent();
    } else {
      this.liveness.beat();
      this.#postHeartbeat();
    }
  }

  async #postHeartbeat() {
    const conn = this.#conn;
    const id = this.connectionId;
    if (!id) return;
    try {
      const status = await this.api.heartbeat(id, this.received);
      if (status === 404 && conn === this.#conn) this.#dead("unknown_connection", true);
    } catch {
      // the stream itself will tell whether the server is gone
    }
  }
}
