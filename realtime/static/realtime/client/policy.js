// Reconnect policy: which transport to try next, how long to wait before a retry (full
// jitter, capped), when to give up, and when to try WebSocket again while on SSE. Counters
// only: the connection asks, the policy answers; no timers, no I/O.

import { CLOSE_GOING_AWAY, CLOSE_RATE_LIMITED, CLOSE_UNAUTHORIZED } from "./codes.js";

/**
 * The delay before retry number `attempt` (0 for the first): full jitter, capped.
 * @param {number} attempt
 * @param {{base: number, cap: number}} backoff
 * @param {() => number} [random]
 */
export function backoffDelay(attempt, { base, cap }, random = Math.random) {
  return Math.floor(random() * Math.min(cap, base * 2 ** attempt));
}

/** Close codes after which retrying cannot help: the client closes instead. */
export const FATAL_CLOSE_CODES = Object.freeze([CLOSE_UNAUTHORIZED]);

/**
 * @typedef {object} PolicyOptions
 * @property {Array<"websocket" | "sse">} transports
 * @property {number} fallbackAfter
 * @property {{base: number, cap: number, maxAttempts: number}} backoff
 * @property {{after: number, cap: number}} upgrade
 * @property {() => number} random
 */

export class ReconnectPolicy {
  /** @param {PolicyOptions} options */
  constructor(options) {
    this.options = options;
    /** Failed attempts in a row: the backoff exponent. */
    this.attempt = 0;
    /** WebSocket attempts in a row that never opened. */
    this.wsFailures = 0;
    /** WebSocket tries in a row that failed while on SSE. */
    this.upgradeFailures = 0;
  }

  /** @returns {"websocket" | "sse"} the transport of the next attempt */
  nextTransport() {
    const { transports, fallbackAfter } = this.options;
    if (!transports.includes("sse")) return "websocket";
    return !transports.includes("websocket") || this.wsFailures >= fallbackAfter
      ? "sse"
      : "websocket";
  }

  /** Whether the client, when on SSE, should try WebSocket again. */
  get upgrades() {
    return this.options.transports.includes("websocket");
  }

  /**
   * A connection was welcomed.
   * @param {"websocket" | "sse"} kind
   */
  opened(kind) {
    if (kind === "websocket") {
      this.wsFailures = 0;
      this.upgradeFailures = 0;
    }
  }

  /**
   * An attempt ended before its welcome.
   * @param {"websocket" | "sse"} kind
   * @param {number} [status] the HTTP status of a refused event stream
   */
  failedBeforeOpen(kind, status) {
    if (kind === "websocket") this.wsFailures += 1;
    // The event stream failed too: the server is down or unreachable, not just the
    // WebSocket upgrade. Try WebSocket first again next time.
    else if (!status || status >= 500) this.wsFailures = 0;
  }

  /** The connection stayed open for backoff.stableAfter: the next failure starts over. */
  stable() {
    this.attempt = 0;
  }

  /** Start over (reconnect() after close). */
  reset() {
    this.attempt = 0;
  }

  /** The last failure was not the server's (a refused stream): do not count it. */
  forgive() {
    this.attempt = Math.max(0, this.attempt - 1);
  }

  /**
   * @param {number} code
   * @returns {boolean} whether a close with `code` must not be retried
   */
  isFatal(code) {
    return FATAL_CLOSE_CODES.includes(code);
  }

  /**
   * The next retry after a close with `code`: its attempt number and delay, or null when
   * backoff.maxAttempts retries failed in a row (give up). Counts the retry.
   * @param {number} code
   * @param {boolean} [immediate] skip the wait (the network is back, the tab is visible)
   * @param {number} [after] the wait the server asked for (a draining server, 1012): it
   *   replaces the backoff, whose exponent it does not raise
   * @returns {{attempt: number, delay: number} | null}
   */
  retry(code, immediate = false, after = undefined) {
    const { backoff, random } = this.options;
    if (code === CLOSE_RATE_LIMITED) this.attempt = Math.max(this.attempt, 4);
    if (this.attempt >= backoff.maxAttempts) return null;
    if (after !== undefined) {
      // The server spread its clients' delays itself: waiting longer only keeps them away.
      const attempt = this.attempt;
      this.attempt += 1;
      return { attempt, delay: immediate ? 0 : after };
    }
    // A server going away (a deploy) closes every client at once: spread them wider.
    if (code === CLOSE_GOING_AWAY) this.attempt = Math.max(this.attempt, 2);
    const attempt = this.attempt;
    const delay = immediate ? 0 : backoffDelay(attempt, backoff, random);
    this.attempt += 1;
    return { attempt, delay };
  }

  /** Milliseconds until the next WebSocket try while on SSE (jittered, doubling, capped). */
  upgradeDelay() {
    const { after, cap } = this.options.upgrade;
    const ceiling = Math.min(cap, after * 2 ** this.upgradeFailures);
    return Math.floor(ceiling * (0.5 + Math.random() / 2));
  }

  upgradeFailed() {
    this.upgradeFailures += 1;
  }

  /** How long a failed HTTP publish waits before it is sent again. */
  httpRetryDelay() {
    return backoffDelay(2, this.options.backoff) + 250;
  }
}
