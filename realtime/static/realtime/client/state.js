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

/** @type {Record<ConnectionStateName, readonly ConnectionStateName[]>} */
const transitions = {
  idle: ["connecting"],
  connecting: ["open", "waiting", "closed"],
  open: ["open", "waiting", "closed"],
  waiting: ["reconnecting", "closed"],
  reconnecting: ["open", "waiting", "closed"],
  closed: ["connecting"],
};
for (const targets of Object.values(transitions)) Object.freeze(targets);

/** From each state, the states it may go to. */
export const TRANSITIONS = Object.freeze(transitions);

/** @type {readonly ConnectionStateName[]} the states of an attempt (ticket, handshake, welcome) */
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
