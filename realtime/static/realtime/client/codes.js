// Codes: the protocol's version and subprotocols, the close codes the client acts on, and
// RealtimeError, the one error type it raises (docs/protocol.md#close-codes, #error-codes).

export const PROTOCOL = 1;

export const SUBPROTOCOL = "realtime.v1";
export const TICKET_SUBPROTOCOL_PREFIX = "realtime.ticket.";

export const CLOSE_NORMAL = 1000;
/** A server going away (a deploy): every client at once, so retries spread wider. */
export const CLOSE_GOING_AWAY = 1001;
/**
 * A server draining for a restart (SIGTERM): each client is told when to come back, in the
 * close reason as `{"retry": <milliseconds>}` (on SSE, a `retry:` field), and waits that long.
 */
export const CLOSE_SERVICE_RESTART = 1012;
/** What the client reports when a transport ends without a close code (network, SSE). */
export const CLOSE_ABNORMAL = 1006;
/** Credentials revoked: fatal, never retried (sign in again, then reconnect()). */
export const CLOSE_UNAUTHORIZED = 4401;
export const CLOSE_RATE_LIMITED = 4429;
/** The client's own: no frame for twice the heartbeat interval. */
export const CLOSE_SILENT = 4000;
/** The client's own: no welcome within connectTimeout. */
export const CLOSE_CONNECT_TIMEOUT = 4001;

/**
 * The reconnect delay a close with CLOSE_SERVICE_RESTART carries in its reason, in
 * milliseconds; undefined for any other close, or a reason that does not say.
 * @param {number} code
 * @param {string} reason
 * @returns {number | undefined}
 */
export function restartDelay(code, reason) {
  if (code !== CLOSE_SERVICE_RESTART) return undefined;
  try {
    const retry = JSON.parse(reason)?.retry;
    return Number.isFinite(retry) && retry >= 0 ? retry : undefined;
  } catch {
    return undefined;
  }
}

/** An error with a stable `code`: the protocol's error codes, plus the client's own. */
export class RealtimeError extends Error {
  /**
   * @param {string} code
   * @param {string} [message]
   * @param {{status?: number, stream?: string}} [detail]
   */
  constructor(code, message, detail = {}) {
    super(message || code);
    this.name = "RealtimeError";
    /** @readonly */
    this.code = code;
    // Declared for the type checker without adding own properties: only `detail` adds them.
    /** @type {number | undefined} HTTP status, for errors of HTTP requests. */
    this.status;
    /** @type {string | undefined} */
    this.stream;
    Object.assign(this, detail);
  }
}
