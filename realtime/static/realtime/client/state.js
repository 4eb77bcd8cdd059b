// The connection's state: one named state and the transitions allowed between them.
//
//   idle ──> connecting ──> open ──> waiting ──> reconnecting ──> open
//                 │          │ ^        ^             │
//                 │          └─┘        └─────────────┘ (the retry failed)
//                 └──> waiting          (open -> open: the transport changed, SSE -> WebSocket)
//   any state but idle ──> closed ──> connecting   (close(); reconnect())
//
// `rt.state` shows "waiting" (for the backoff delay) and "reconnecting" (a retry under way)
// both as "reconnecting": to the application they are one thing, retrying.

/** @typedef {"idle" | "connecting" | "open" | "waiting" | "reconnecting" | "closed"} ConnectionStateName */
/** @typedef {"idle" | "connecting" | "open" | "reconnecting" | "closed"} PublicState */

/** @type {Readonly<Record<ConnectionStateName, readonly ConnectionStateName[]>>} */
export const TRANSITIONS = Object.freeze({
  idle: Object.freeze(["connecting"]),
  connecting: Object.freeze(["open", "waiting", "closed"]),
  open: Object.freeze(["open", "waiting", "closed"]),
  waiting: Object.freeze(["reconnecting", "closed"]),
  reconnecting: Object.freeze(["open", "waiting", "closed"]),
  closed: Object.freeze(["connecting"]),
});

/** The attempt states: a connection attempt (ticket, handshake, welcome) is under way. */
export const ATTEMPTING = Object.freeze(["connecting", "reconnecting"]);

export class StateError extends Error {
  /**
   * @param {ConnectionStateName} from
   * @param {ConnectionStateName} to
   */
  constructor(from, to) {
    const allowed = TRANSITIONS[from].join(", ");
    super(`realtime: no transition from "${from}" to "${to}" (from "${from}": ${allowed}).`);
    this.name = "StateError";
  }
}

export class ConnectionState {
  /** @type {ConnectionStateName} */
  #name = "idle";

  /** The current state. */
  get name() {
    return this.#name;
  }

  /** @returns {PublicState} the state as `rt.state` shows it */
  get public() {
    return this.#name === "waiting" ? "reconnecting" : this.#name;
  }

  /** Whether a connection attempt is under way. */
  get attempting() {
    return ATTEMPTING.includes(this.#name);
  }

  /**
   * @param {...ConnectionStateName} names
   * @returns {boolean} whether the state is one of `names`
   */
  is(...names) {
    return names.includes(this.#name);
  }

  /**
   * Go to `next`; throws StateError for a transition the table does not allow.
   * @param {ConnectionStateName} next
   * @returns {PublicState} the public state before
   */
  to(next) {
    if (!TRANSITIONS[this.#name].includes(next)) throw new StateError(this.#name, next);
    const previous = this.public;
    this.#name = next;
    return previous;
  }
}
