// The client: the API of connect() — subscribe, publish, presence, reconnect, close — over
// one Connection. Keeps the subscriptions and the publish queue, sends their requests and
// routes the server's frames (and the replies to its requests) to them.

import { RealtimeError } from "./codes.js";
import { Connection } from "./connection.js";
import { Emitter, deferred } from "./emitter.js";
import { encodeCursor } from "./encoding.js";
import { HttpApi } from "./http.js";
import { resolveOptions } from "./options.js";
import { storedClientId } from "./page.js";
import { backoffDelay } from "./policy.js";
import { PublishQueue } from "./publish.js";
import { Subscription } from "./subscription.js";

/** @import { ConnectionOwner, Internals } from "./connection.js" */
/** @import { Deferred } from "./emitter.js" */
/** @import { Meta } from "./presence.js" */
/** @import { PublicState } from "./state.js" */
/** @import { PublishOptions, PublishResult, SubscribeOptions, SubscriptionRequests } from "./subscription.js" */
/** @import { ClientFrame, CloseInfo, Frame } from "./transport.js" */

/**
 * A request waiting for its reply, by frame id.
 * @typedef {{kind: "subscribe", sub: Subscription, presence: boolean, subscribed?: boolean}
 *   | {kind: "presence", sub: Subscription, leave: boolean} & Deferred<string | null>
 *   | {kind: "unsubscribe"} & Deferred<void>} Reply
 */

/**
 * @typedef {{
 *   state: (change: any) => void,
 *   attempt: (attempt: any) => void,
 *   error: (error: RealtimeError) => void,
 * }} ClientEvents
 */

/**
 * Open a client; it connects at once and reconnects until `close()`.
 * @param {Record<string, any>} [options] see DEFAULTS and docs/client.md
 * @returns {RealtimeClient}
 */
export function connect(options = {}) {
  return new RealtimeClient(options);
}

/**
 * One connection to the server, kept open, over WebSocket or SSE; see connect().
 * @extends {Emitter<ClientEvents>}
 */
export class RealtimeClient extends Emitter {
  /**
   * @param {Record<string, any>} [options] see DEFAULTS and docs/client.md
   * @param {Internals} [internals] transports and clock (the unit tests' fakes)
   */
  constructor(options = {}, internals = {}) {
    super();
    this.options = resolveOptions(options);
    /** @type {string | null} */
    this.clientId =
      this.options.clientId === undefined ? storedClientId() : this.options.clientId || null;
    /** @type {Map<string, Subscription>} */
    this.subscriptions = new Map();
    this._nextId = 1;
    /** @type {Map<number, Reply>} */
    this._replies = new Map();
    this._dropCursor = false; // the server refused our cursor: the next request goes without
    this._api = new HttpApi(this.options);
    this._queue = new PublishQueue(this.options.maxQueue);
    /** @type {SubscriptionRequests} */
    this._requests = {
      publish: (stream, event, data, options) => this.publish(stream, event, data, options),
      unsubscribe: (sub) => this._unsubscribe(sub),
      presence: (sub, meta) => this._presence(sub, meta),
    };
    this._connection = new Connection(
      this.options,
      this.clientId,
      this._api,
      this._connectionOwner(),
      internals,
    );
    // After the caller's synchronous subscribe() calls, so an SSE request names them all.
    this._connection.start();
  }

  /** @returns {PublicState} */
  get state() {
    return this._connection.state;
  }

  /** The transport while open, else null. */
  get transport() {
    return this._connection.transport;
  }

  get connectionId() {
    return this._connection.connectionId;
  }

  /** Seconds between heartbeats, from the server's welcome. */
  get heartbeat() {
    return this._connection.heartbeat;
  }

  /** The largest frame the server accepts, in bytes (its welcome's `max_frame`). */
  get maxFrame() {
    return this._connection.maxFrame;
  }

  // --- public API ------------------------------------------------------------------------

  /**
   * Subscribe to `stream`: options since, epoch, presence (meta), onEvent, onSubscribed,
   * onReset, onSnapshot, onError.
   * @param {string} stream
   * @param {SubscribeOptions} [options]
   * @returns {Subscription}
   */
  subscribe(stream, options = {}) {
    if (this.state === "closed") throw new RealtimeError("closed", "The client is closed.");
    if (this.subscriptions.has(stream)) {
      throw new RealtimeError("already_subscribed", `Already subscribed to ${stream}.`);
    }
    const sub = new Subscription(this, stream, options, this._requests);
    this.subscriptions.set(stream, sub);
    if (options.presence) sub.presence.want(options.presence); // joins with the subscribe
    const { transport } = this._connection;
    if (transport === "websocket") this._sendSubscribe(sub);
    else if (transport === "sse") this._connection.reopenEventStream();
    return sub;
  }

  /**
   * The active subscription to `stream`, if any.
   * @param {string} stream
   */
  subscription(stream) {
    return this.subscriptions.get(stream);
  }

  /**
   * Publish an event; resolves with {stream, seq, duplicate} once stored (seq null for an
   * ephemeral event). While disconnected, stored publishes wait in a bounded queue (rejected
   * with code "queue_full" beyond `maxQueue`); ephemeral ones are rejected ("disconnected").
   * @param {string} stream
   * @param {string} event
   * @param {unknown} [data]
   * @param {PublishOptions} [options]
   * @returns {Promise<PublishResult>}
   */
  publish(stream, event, data = null, options = {}) {
    if (this.state === "closed") {
      return Promise.reject(new RealtimeError("closed", "The client is closed."));
    }
    const promise = this._queue.add(stream, event, data, options, this._connection.isOpen);
    this._flushQueue();
    return promise;
  }

  /** Connect now if waiting to retry (e.g. from a "Retry" button), or after `close()`. */
  reconnect() {
    this._connection.reconnect();
  }

  /** Close for good: no reconnect; queued and unacknowledged publishes are rejected. */
  close() {
    this._connection.close();
  }

  // --- what the connection asks of the client --------------------------------------------

  /** @returns {ConnectionOwner} */
  _connectionOwner() {
    return {
      announce: (type, detail) => this._emit(type, detail),
      opened: (kind) => {
        if (kind === "websocket") {
          for (const sub of this.subscriptions.values()) this._sendSubscribe(sub);
        }
        this._flushQueue();
      },
      frame: (frame) => this._handleFrame(frame),
      lost: () => {
        this._queue.connectionLost(); // unacknowledged publishes go back to the queue
        this._replies.clear();
        for (const sub of this.subscriptions.values()) sub.resync(null);
      },
      closed: (error) => this._queue.rejectAll(error),
      eventStreamQuery: () => this._eventStreamQuery(),
      eventStreamSignature: () => this._eventStreamParams().toString(),
      refused: (info) => this._eventStreamRefused(info),
      presenceJoined: () => [...this.subscriptions.values()].some((sub) => sub.presence.meta),
    };
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

  /** The query of a new SSE request, with the positions as a cursor; null: no stream. */
  _eventStreamQuery() {
    if (!this.subscriptions.size) return null;
    const params = this._eventStreamParams();
    const signature = params.toString();
    const cursor = [];
    for (const sub of this.subscriptions.values()) {
      const entry = sub.cursorEntry();
      if (entry) cursor.push(entry);
    }
    if (cursor.length && !this._dropCursor) params.set("last_event_id", encodeCursor(cursor));
    this._dropCursor = false;
    return { params, signature };
  }

  /**
   * An event stream was refused with an HTTP status: what to do about it.
   * @param {CloseInfo} info
   * @returns {{error?: RealtimeError, forgive?: boolean}}
   */
  _eventStreamRefused({ status = 0, error }) {
    const code = error?.code || `http_${status}`;
    if (status >= 500 || status === 429) return {}; // transient: back off and retry
    if (code === "invalid_cursor") {
      // Only a cursor too long for the server (hundreds of streams) gets here: start the
      // streams live and tell the application that their history was not recovered.
      this._dropCursor = true;
      for (const sub of this.subscriptions.values()) sub.forgetPosition();
      return {};
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
        sub.fail(new RealtimeError(code, message, { stream: sub.stream }));
      }
      return { forgive: true }; // not the server's fault
    }
    return {
      error: new RealtimeError(code, message || `The event stream was refused (${status}).`),
    };
  }

  // --- sending -----------------------------------------------------------------------------

  _id() {
    return this._nextId++;
  }

  /** @param {Subscription} sub */
  _sendSubscribe(sub) {
    const id = this._id();
    const frame = sub.subscribeFrame(id);
    this._replies.set(id, { kind: "subscribe", sub, presence: Boolean(frame.presence) });
    this._connection.send(frame);
    return id;
  }

  /**
   * Join (meta) or leave (null) the presence of `sub`'s stream.
   * @param {Subscription} sub
   * @param {Meta | null} meta
   * @returns {Promise<string | null | void>}
   */
  _presence(sub, meta) {
    if (sub.state === "closed" || !this.subscriptions.has(sub.stream)) {
      return Promise.reject(new RealtimeError("not_subscribed", "Not subscribed."));
    }
    const { transport } = this._connection;
    if (transport === "sse") {
      this._connection.reopenEventStream(); // the new request joins (or not) with the meta
      return Promise.resolve();
    }
    if (!transport) return Promise.resolve(); // the resubscribe carries it
    const id = this._id();
    /** @type {Deferred<string | null>} */
    const reply = deferred();
    this._replies.set(id, { kind: "presence", sub, leave: meta === null, ...reply });
    this._connection.send(
      meta === null
        ? { type: "presence", id, stream: sub.stream, leave: true }
        : { type: "presence", id, stream: sub.stream, meta },
    );
    return reply.promise;
  }

  /**
   * @param {Subscription} sub
   * @returns {Promise<void>}
   */
  _unsubscribe(sub) {
    if (this.subscriptions.get(sub.stream) !== sub) return Promise.resolve();
    this.subscriptions.delete(sub.stream);
    sub.end(new RealtimeError("not_subscribed", "Unsubscribed."));
    const { transport } = this._connection;
    if (transport === "sse") {
      this._connection.reopenEventStream();
      return Promise.resolve();
    }
    if (!transport) return Promise.resolve();
    const id = this._id();
    /** @type {Deferred<void>} */
    const reply = deferred();
    this._replies.set(id, { kind: "unsubscribe", ...reply });
    this._connection.send({ type: "unsubscribe", id, stream: sub.stream });
    return reply.promise;
  }

  /**
   * A gap in a stream: ask for it again from the last seq delivered.
   * @param {Subscription} sub
   */
  _repair(sub) {
    const { transport } = this._connection;
    if (transport === "websocket") {
      this._connection.send({ type: "unsubscribe", stream: sub.stream });
      sub.resync(this._sendSubscribe(sub));
    } else if (transport === "sse") {
      sub.resync(null);
      this._connection.reopenEventStream();
    }
  }

  _flushQueue() {
    const connection = this._connection;
    if (!connection.isOpen || !this._queue.size) return;
    if (connection.transport === "websocket") {
      const send = (/** @type {ClientFrame} */ frame) => connection.send(frame);
      this._queue.sendFrames(() => this._id(), connection.maxFrame, send);
    } else {
      this._postQueue();
    }
  }

  /** Publishes over HTTP while on SSE, one at a time so they are stored in order. */
  async _postQueue() {
    const connection = this._connection;
    const onSse = () => connection.transport === "sse";
    const retryDelay = () => backoffDelay(2, this.options.backoff) + 250;
    const done = await this._queue.postAll(this._api, onSse, retryDelay);
    if (done && connection.transport === "websocket") this._flushQueue(); // upgraded meanwhile
  }

  // --- receiving -----------------------------------------------------------------------------

  /**
   * One server frame (over either transport).
   * @param {Frame} frame
   */
  _handleFrame(frame) {
    const sub = frame.stream === undefined ? undefined : this.subscriptions.get(frame.stream);
    switch (frame.type) {
      case "event":
        if (sub && !sub.handleEvent(frame)) this._repair(sub);
        break;
      case "subscribed": {
        const reply = frame.id === null ? undefined : this._replies.get(frame.id);
        if (reply?.kind === "subscribe") reply.subscribed = true;
        if (reply && !(reply.kind === "subscribe" && reply.presence)) {
          this._replies.delete(frame.id);
        }
        sub?.handleSubscribed(frame);
        break;
      }
      case "snapshot":
        sub?.handleSnapshot(frame);
        break;
      case "ack":
        this._ack(frame);
        break;
      case "unsubscribed": {
        const reply = this._replies.get(frame.id);
        this._replies.delete(frame.id);
        if (reply && reply.kind !== "subscribe") {
          /** @type {(value?: unknown) => void} */ (reply.resolve)();
        }
        if (frame.reason === "revoked" && sub) {
          this.subscriptions.delete(sub.stream);
          sub.fail(new RealtimeError("revoked", "Access to this stream was revoked."));
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
              if (reply.kind === "subscribe" && reply.sub === sub && reply.presence) {
                this._replies.delete(id);
              }
            }
          }
          sub.presence.handleFrame(frame);
        }
    }
  }

  /** @param {Frame} frame */
  _ack(frame) {
    if (this._queue.acknowledged(frame)) return;
    const reply = this._replies.get(frame.id);
    if (!reply) return;
    this._replies.delete(frame.id);
    if (reply.kind === "presence") {
      if (!reply.leave) reply.sub.presence.joinedAs(frame.ref);
      reply.resolve(frame.ref ?? null);
    }
  }

  /** @param {Frame} frame */
  _error(frame) {
    const error = new RealtimeError(frame.code, frame.message);
    if (this._queue.refused(frame.id, error)) return;
    const reply = frame.id === null ? undefined : this._replies.get(frame.id);
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
        sub.fail(error);
      } else {
        sub.presenceRefused(error); // subscribed, but joining presence failed
      }
    } else if (reply.kind === "presence") {
      reply.reject(error);
      reply.sub.presenceRefused(error, reply.leave);
    } else {
      reply.reject(error);
    }
  }
}
