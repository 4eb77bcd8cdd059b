// The outbox: frames sent over WebSocket at most `rate` a second (bursts of `burst`), below
// the server's RATE_LIMIT, so a busy page is slowed down rather than cut off.

/** @import { ClientFrame } from "./transport.js" */
/** @typedef {{rate: number, burst: number}} RateLimit */

export class Outbox {
  /** @type {ClientFrame[]} */
  #frames = [];
  #tokens;
  #refilled;
  /** @type {ReturnType<typeof setTimeout> | null} */
  #timer = null;

  /**
   * @param {RateLimit} limit
   * @param {() => number} now milliseconds
   * @param {(frame: ClientFrame) => boolean} send sends one frame; false: not now
   */
  constructor(limit, now, send) {
    this.limit = limit;
    this.now = now;
    this.send = send;
    this.#tokens = limit.burst;
    this.#refilled = now();
  }

  /** A new connection: a full burst again. */
  refill() {
    this.#tokens = this.limit.burst;
  }

  /** Forget the frames not sent (the connection is gone). */
  clear() {
    this.#frames = [];
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }

  /** @param {ClientFrame} frame */
  push(frame) {
    this.#frames.push(frame);
    this.drain();
  }

  /** Send what the rate allows now; come back for the rest. */
  drain() {
    const { rate, burst } = this.limit;
    const now = this.now();
    this.#tokens = Math.min(burst, this.#tokens + ((now - this.#refilled) / 1000) * rate);
    this.#refilled = now;
    while (this.#frames.length && this.#tokens >= 1) {
      if (!this.send(this.#frames[0])) return;
      this.#frames.shift();
      this.#tokens -= 1;
    }
    if (this.#frames.length && !this.#timer) {
      this.#timer = setTimeout(() => {
        this.#timer = null;
        this.drain();
      }, 1000 / rate);
    }
  }
}
