// Presence of one subscription: who is on the stream, kept current from presence frames, and
// this connection's own join (remembered, so it is joined again after a reconnect).

import { RealtimeError } from "./codes.js";
import { Emitter, deferred } from "./emitter.js";

/** @import { Deferred } from "./emitter.js" */
/** @import { Frame } from "./transport.js" */
/** @import { Subscription } from "./subscription.js" */

/** @typedef {Record<string, unknown>} Meta */
/** @typedef {{ref: string, meta: Meta}} PresenceMeta */
/** @typedef {{key: string, metas: PresenceMeta[]}} PresenceMember */
/** @typedef {{members: number, connections: number}} PresenceCount */

/**
 * @typedef {{
 *   join: (member: PresenceMember) => void,
 *   update: (member: PresenceMember, previous: PresenceMember) => void,
 *   leave: (member: PresenceMember) => void,
 *   sync: (members: Map<string, PresenceMember>) => void,
 *   count: (count: PresenceCount) => void,
 *   change: (presence: Presence) => void,
 * }} PresenceEvents
 */

/**
 * Who is on a stream: `members` (key -> {key, metas}), kept current from presence frames.
 * @extends {Emitter<PresenceEvents>}
 */
export class Presence extends Emitter {
  /**
   * @param {Subscription} subscription
   * @param {(meta: Meta | null) => Promise<any>} request sends a join (meta) or a leave (null)
   */
  constructor(subscription, request) {
    super();
    this.subscription = subscription;
    /** @type {Map<string, PresenceMember>} */
    this.members = new Map();
    /** @type {PresenceCount | null} {members, connections} on counts-only streams */
    this.count = null;
    /** @type {string | null} this connection's entry in its member's metas, once joined */
    this.ref = null;
    /** @type {Meta | null} what we joined with (and rejoin with after a reconnect) */
    this.meta = null;
    /** @type {Deferred<string | null>[]} */
    this._waiters = [];
    this._request = request;
  }

  /**
   * Join with `meta` (or replace it); resolves with this connection's ref.
   * @param {Meta} [meta]
   * @returns {Promise<string | null>}
   */
  join(meta = {}) {
    if (meta === null || typeof meta !== "object" || Array.isArray(meta)) {
      return Promise.reject(new RealtimeError("invalid_presence", "meta must be an object."));
    }
    const promise = this.want(meta);
    this._request(meta);
    return promise;
  }

  /**
   * Same as join(): the metadata of a joined connection can be replaced at any time.
   * @param {Meta} meta
   */
  update(meta) {
    return this.join(meta);
  }

  /** Leave now (others see it at once, without the grace period of a closed connection). */
  leave() {
    this.meta = null;
    this.ref = null;
    this.settle(null, new RealtimeError("left", "Left before the join completed."));
    return this._request(null);
  }

  /** The members as an array. */
  list() {
    return [...this.members.values()];
  }

  get joined() {
    return this.meta !== null;
  }

  // --- for the client ---------------------------------------------------------------------

  /**
   * Remember `meta` as what to join with; the promise settles with the join's outcome.
   * @param {Meta} meta
   */
  want(meta) {
    this.meta = meta;
    /** @type {Deferred<string | null>} */
    const waiter = deferred();
    this._waiters.push(waiter);
    return waiter.promise;
  }

  /**
   * Settle the joins waiting: with this connection's ref, or with `error`.
   * @param {string | null} ref
   * @param {Error} [error]
   */
  settle(ref, error) {
    for (const waiter of this._waiters.splice(0)) {
      if (error) waiter.reject(error);
      else waiter.resolve(ref);
    }
  }

  /**
   * The server acknowledged the join: `ref` is this connection's entry.
   * @param {string | null} ref
   */
  joinedAs(ref) {
    this.ref = ref;
    this.settle(ref);
  }

  /**
   * A join (or, with `leave`, a leave) was refused.
   * @param {Error} error
   * @param {boolean} [leave]
   */
  refused(error, leave = false) {
    if (!leave) this.meta = null;
    this.settle(null, error);
  }

  /** @param {Frame} frame a presence.* frame of this stream */
  handleFrame(frame) {
    const kind = frame.type.slice("presence.".length);
    if (kind === "state") {
      this.ref = frame.ref;
      this.members = new Map(
        Object.entries(/** @type {Record<string, {metas: PresenceMeta[]}>} */ (frame.members)).map(
          ([key, value]) => [key, { key, metas: value.metas }],
        ),
      );
      this.settle(frame.ref);
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
