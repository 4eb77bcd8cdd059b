// One subscription: a stream's position (epoch, seq), its handlers and its presence. Applies
// the frames of its stream: delivers each event once and in order, drops duplicates, reports
// gaps and streams that could not be recovered.

import { Emitter, deferred } from "./emitter.js";
import { Presence } from "./presence.js";

/** @import { Deferred } from "./emitter.js" */
/** @import { CursorEntry } from "./encoding.js" */
/** @import { Meta } from "./presence.js" */
/** @import { Frame } from "./transport.js" */
/** @import { RealtimeError } from "./codes.js" */

/** @typedef {{stream: string, epoch: string, head: number, recovered: boolean}} SubscribedInfo */
/** @typedef {{stream: string, seq: number, data: any}} SnapshotInfo */
/** @typedef {{stream: string, expected: number, got: number}} GapInfo */
/** @typedef {{stream: string, seq?: number, event: string, data: any, ts: string, ephemeral?: true}} RealtimeEvent */
/** @typedef {{stream: string, seq: number | null, duplicate: boolean}} PublishResult */
/** @typedef {{ephemeral?: boolean, key?: string}} PublishOptions */

/**
 * @typedef {object} SubscribeOptions
 * @property {number} [since]
 * @property {string} [epoch]
 * @property {Meta} [presence]
 * @property {(event: RealtimeEvent) => void} [onEvent]
 * @property {(info: SubscribedInfo) => void} [onSubscribed]
 * @property {(info: SubscribedInfo) => void} [onReset]
 * @property {(snapshot: SnapshotInfo) => void} [onSnapshot]
 * @property {(error: RealtimeError) => void} [onError]
 */

/**
 * What a subscription asks of its client: small requests, each a promise.
 * @typedef {object} SubscriptionRequests
 * @property {(stream: string, event: string, data: unknown, options?: PublishOptions) => Promise<PublishResult>} publish
 * @property {(sub: Subscription) => Promise<void>} unsubscribe
 * @property {(sub: Subscription, meta: Meta | null) => Promise<any>} presence
 */

/**
 * @typedef {{
 *   "*": (event: RealtimeEvent) => void,
 *   "realtime.subscribed": (info: SubscribedInfo) => void,
 *   "realtime.reset": (info: SubscribedInfo) => void,
 *   "realtime.snapshot": (snapshot: SnapshotInfo) => void,
 *   "realtime.gap": (gap: GapInfo) => void,
 *   "realtime.error": (error: RealtimeError) => void,
 *   [eventType: string]: (...args: any[]) => void,
 * }} SubscriptionEvents
 */

const OPTION_EVENTS = /** @type {const} */ ([
  ["onEvent", "*"],
  ["onSubscribed", "realtime.subscribed"],
  ["onReset", "realtime.reset"],
  ["onSnapshot", "realtime.snapshot"],
  ["onError", "realtime.error"],
]);

/**
 * One stream: its position (epoch, seq), its handlers and its presence.
 *
 * Events: "*" (every event), an event type such as "message.created", and the client's own
 * "realtime.subscribed", "realtime.reset", "realtime.snapshot", "realtime.gap" and
 * "realtime.error" (names the protocol reserves, so they never clash with an event type).
 * @extends {Emitter<SubscriptionEvents>}
 */
export class Subscription extends Emitter {
  /**
   * @param {any} client the RealtimeClient (typed there: this module does not import it)
   * @param {string} stream
   * @param {SubscribeOptions} options
   * @param {SubscriptionRequests} requests
   */
  constructor(client, stream, options, requests) {
    super();
    this.client = client;
    this.stream = stream;
    /** @type {string | null} */
    this.epoch = options.epoch ?? null;
    /** @type {number | null} last seq delivered; null: start live */
    this.seq = options.since ?? null;
    /** @type {"pending" | "active" | "closed"} "active" after the first subscribed */
    this.state = "pending";
    this.presence = new Presence(this, (meta) => requests.presence(this, meta));
    /** @type {boolean | null} */
    this.recovered = null;
    this.duplicates = 0; // events dropped because they were already delivered
    this._requests = requests;
    this._floating = false; // after recovered: false, the next event starts the position
    /** @type {number | null} id of a resubscribe after a gap; events wait for its reply */
    this._syncing = null;
    this._lost = false; // the position was lost on our side: treat the next subscribed as such
    /** @type {Deferred<SubscribedInfo>} */
    this._ready = deferred();
    this.ready = this._ready.promise;
    for (const [option, type] of OPTION_EVENTS) {
      const handler = options[option];
      if (typeof handler === "function") this.on(type, handler);
    }
  }

  /** Where this subscription is: send it back as {since, epoch} to resume elsewhere. */
  get position() {
    return { epoch: this.epoch, seq: this._floating ? 0 : this.seq };
  }

  /**
   * Publish on this stream; resolves with {seq, duplicate} when the server acknowledged.
   * @param {string} event
   * @param {unknown} [data]
   * @param {PublishOptions} [options]
   * @returns {Promise<PublishResult>}
   */
  publish(event, data = null, options = {}) {
    return this._requests.publish(this.stream, event, data, options);
  }

  /** Stop receiving (and leave presence). */
  unsubscribe() {
    return this._requests.unsubscribe(this);
  }

  // --- for the client ---------------------------------------------------------------------

  /**
   * The subscribe frame that resumes from the position, joining presence if wanted.
   * @param {number} id
   */
  subscribeFrame(id) {
    /** @type {{type: "subscribe", id: number, stream: string, since?: number, epoch?: string, presence?: Meta}} */
    const frame = { type: "subscribe", id, stream: this.stream };
    if (this.seq !== null) {
      frame.since = this._floating ? 0 : this.seq;
      if (this.epoch !== null) frame.epoch = this.epoch;
    }
    if (this.presence.meta) frame.presence = this.presence.meta;
    return frame;
  }

  /** @returns {CursorEntry | null} this stream's entry of an SSE resume cursor */
  cursorEntry() {
    if (this.seq === null) return null;
    return [this.stream, this.epoch ?? "", this._floating ? 0 : this.seq];
  }

  /**
   * Events wait for the reply to resubscribe `id` (a gap is being repaired); null: not.
   * @param {number | null} id
   */
  resync(id) {
    this._syncing = id;
  }

  /** The server could not take our position (a cursor too long): start live, as lost. */
  forgetPosition() {
    this._lost = this.seq !== null;
    this.seq = null;
    this._floating = false;
  }

  /** @param {Frame} frame a subscribed frame of this stream */
  handleSubscribed(frame) {
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

  /**
   * @param {Frame} frame an event frame of this stream
   * @returns {boolean} false when the event shows a gap the client must repair
   */
  handleEvent(frame) {
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

  /** @param {Frame} frame a snapshot frame of this stream */
  handleSnapshot(frame) {
    if (this._syncing !== null) return;
    this.seq = Math.max(this._floating ? 0 : this.seq || 0, frame.seq);
    this._floating = false;
    this._emit("realtime.snapshot", { stream: this.stream, seq: frame.seq, data: frame.data });
  }

  /**
   * The subscription was refused or ended by the server.
   * @param {RealtimeError} error
   */
  fail(error) {
    this.state = "closed";
    this._ready.reject(error);
    this.presence.settle(null, error);
    this._emit("realtime.error", error);
  }

  /** Unsubscribed by the application: waiting joins fail. */
  end(/** @type {RealtimeError} */ error) {
    this.state = "closed";
    this.presence.settle(null, error);
  }

  /**
   * Joining (or leaving) presence was refused; the subscription itself goes on.
   * @param {RealtimeError} error
   * @param {boolean} [leave]
   */
  presenceRefused(error, leave = false) {
    this.presence.refused(error, leave);
    this._emit("realtime.error", error);
  }

  /** @param {Frame} frame */
  _deliver(frame) {
    const { stream, seq, data, ts } = frame;
    /** @type {RealtimeEvent} */
    const event = { stream, seq, event: frame.event, data, ts };
    if (frame.seq === undefined) event.ephemeral = true;
    this._emit("*", event);
    this._emit(frame.event, event);
  }
}
