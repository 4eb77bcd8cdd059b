// The publish queue: publishes wait here while disconnected (bounded), go out in order once
// connected (WebSocket frames, or HTTP one at a time on SSE), and wait for their ack in
// flight; those whose ack was lost with the connection are sent again, with the same key.

import { RealtimeError } from "./codes.js";
import { deferred } from "./emitter.js";
import { randomId } from "./encoding.js";

/** @import { HttpApi } from "./http.js" */
/** @import { ClientFrame, Frame } from "./transport.js" */
/** @import { PublishOptions, PublishResult } from "./subscription.js" */

/**
 * One publish, from publish() until it settles. `id`: its frame id while in flight.
 * @typedef {object} PublishEntry
 * @property {string} stream
 * @property {string} event
 * @property {unknown} data
 * @property {boolean} ephemeral
 * @property {string | undefined} key
 * @property {number | null} id
 * @property {Promise<PublishResult>} promise
 * @property {(result: PublishResult) => void} resolve
 * @property {(error: Error) => void} reject
 */

const utf8 = new TextEncoder();

export class PublishQueue {
  /** @type {PublishEntry[]} */
  #waiting = [];
  /** @type {Map<number, PublishEntry>} WebSocket publishes sent, by frame id, until acked */
  #inflight = new Map();
  #httpBusy = false;
  /** @type {ReturnType<typeof setTimeout> | null} */
  #httpRetry = null;

  /** @param {number} maxQueue publishes held while disconnected */
  constructor(maxQueue) {
    this.maxQueue = maxQueue;
  }

  /** Publishes waiting to be sent. */
  get size() {
    return this.#waiting.length;
  }

  /**
   * Queue a publish; `connected`: whether it can go out now (else the queue's limits apply).
   * @param {string} stream
   * @param {string} event
   * @param {unknown} data
   * @param {PublishOptions} options
   * @param {boolean} connected
   * @returns {Promise<PublishResult>}
   */
  add(stream, event, data, { ephemeral = false, key }, connected) {
    /** @type {PublishEntry} */
    const entry = {
      stream,
      event,
      data,
      ephemeral: Boolean(ephemeral),
      key: ephemeral ? undefined : key || randomId(),
      id: null,
      ...deferred(),
    };
    if (!connected) {
      if (entry.ephemeral) {
        return Promise.reject(
          new RealtimeError("disconnected", "Not connected: ephemeral events are not queued."),
        );
      }
      if (this.#waiting.length >= this.maxQueue) {
        return Promise.reject(
          new RealtimeError(
            "queue_full",
            `${this.#waiting.length} publishes are already waiting for the connection.`,
          ),
        );
      }
    }
    this.#waiting.push(entry);
    return entry.promise;
  }

  /**
   * Send every waiting publish as a frame: `nextId` numbers them, `send` sends one. A frame
   * over `maxFrame` bytes is refused here, as the server would (closing the connection with
   * 1009: sent, it would be sent again after every reconnect).
   * @param {() => number} nextId
   * @param {number | null} maxFrame
   * @param {(frame: ClientFrame) => void} send
   */
  sendFrames(nextId, maxFrame, send) {
    for (const entry of this.#waiting.splice(0)) {
      entry.id = nextId();
      /** @type {{type: "publish", id: number, stream: string, event: string, data: unknown, ephemeral?: true, key?: string}} */
      const frame = { type: "publish", id: entry.id, stream: entry.stream, event: entry.event, data: entry.data };
      if (entry.ephemeral) frame.ephemeral = true;
      else frame.key = entry.key;
      const size = maxFrame ? utf8.encode(JSON.stringify(frame)).length : 0;
      if (maxFrame && size > maxFrame) {
        entry.reject(
          new RealtimeError(
            "frame_too_large",
            `This publish is ${size} bytes; the server accepts frames of ${maxFrame}.`,
          ),
        );
        continue;
      }
      this.#inflight.set(entry.id, entry);
      send(frame);
    }
  }

  /**
   * POST the waiting publishes one at a time, in order, while `onSse()` holds. A failure
   * worth retrying stops the pump and schedules it again.
   * @param {HttpApi} api
   * @param {() => boolean} onSse
   * @param {() => number} retryDelay
   * @returns {Promise<boolean>} true when the pump ran to its end (not busy, not retrying)
   */
  async postAll(api, onSse, retryDelay) {
    if (this.#httpBusy) return false;
    this.#httpBusy = true;
    try {
      while (onSse() && this.#waiting.length) {
        const entry = this.#waiting[0];
        const outcome = await api.publish(entry);
        if (outcome === "retry") {
          if (onSse() && !this.#httpRetry) {
            this.#httpRetry = setTimeout(() => {
              this.#httpRetry = null;
              this.postAll(api, onSse, retryDelay);
            }, retryDelay());
          }
          return false;
        }
        if (this.#waiting[0] === entry) this.#waiting.shift();
      }
    } finally {
      this.#httpBusy = false;
    }
    return true;
  }

  /**
   * An ack frame: settles the publish it acknowledges.
   * @param {Frame} frame
   * @returns {boolean} whether it was a publish's
   */
  acknowledged(frame) {
    const entry = this.#inflight.get(frame.id);
    if (!entry) return false;
    this.#inflight.delete(frame.id);
    entry.resolve({ stream: entry.stream, seq: frame.seq ?? null, duplicate: !!frame.duplicate });
    return true;
  }

  /**
   * An error frame: rejects the publish it answers.
   * @param {number | null} id
   * @param {Error} error
   * @returns {boolean} whether it was a publish's
   */
  refused(id, error) {
    const entry = id === null ? undefined : this.#inflight.get(id);
    if (!entry || id === null) return false;
    this.#inflight.delete(id);
    entry.reject(error);
    return true;
  }

  /**
   * The connection is gone: publishes in flight go back to the front of the queue (the same
   * key stores them once), ephemeral ones fail; the HTTP retry is cancelled.
   */
  connectionLost() {
    if (this.#httpRetry) clearTimeout(this.#httpRetry);
    this.#httpRetry = null;
    const inflight = [...this.#inflight.values()].sort(
      (a, b) => /** @type {number} */ (a.id) - /** @type {number} */ (b.id),
    );
    this.#inflight.clear();
    const requeue = [];
    for (const entry of inflight) {
      entry.id = null;
      if (entry.ephemeral) entry.reject(new RealtimeError("disconnected", "Connection lost."));
      else requeue.push(entry); // re-sent with the same key: stored once
    }
    this.#waiting.unshift(...requeue);
  }

  /**
   * Fail every waiting publish with `error` (the client closed).
   * @param {Error} error
   */
  rejectAll(error) {
    for (const entry of this.#waiting.splice(0)) entry.reject(error);
  }
}
