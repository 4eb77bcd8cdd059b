// Liveness and flow control of the open connection: when it was last heard from and last
// sent to, how many frames arrived and how many were acknowledged (docs/protocol.md#flow-control).
// Bookkeeping only: the connection asks, and sends what is due.

export class Liveness {
  /** @param {() => number} now milliseconds, monotonic */
  constructor(now) {
    this.now = now;
    /** Frames received on this connection, the welcome included. */
    this.received = 0;
    this.acked = 0;
    this.ackEvery = 50;
    this.lastReceived = 0;
    this.lastSent = 0;
    this.lastBeat = 0;
  }

  /**
   * A connection was welcomed; `windowMessages`: its flow-control window, in frames.
   * The welcome frame is the first of this connection's frames.
   * @param {number | undefined} windowMessages
   */
  opened(windowMessages) {
    this.received = 1;
    this.acked = 0;
    // Every quarter of the window (at most every 100 frames), so the server keeps sending.
    this.ackEvery = Math.max(1, Math.min(100, Math.floor((windowMessages ?? 200) / 4)));
    this.lastReceived = this.lastSent = this.lastBeat = this.now();
  }

  /** Something arrived (a frame, a keep-alive comment). */
  heard() {
    this.lastReceived = this.now();
  }

  /** Something was sent. */
  sent() {
    this.lastSent = this.now();
  }

  /** An HTTP heartbeat was sent (SSE). */
  beat() {
    this.lastBeat = this.now();
  }

  /** A frame arrived (each frame of a batch counts, the batch itself does not). */
  count() {
    this.received += 1;
  }

  /** Whether enough frames arrived unacknowledged to acknowledge them now. */
  get ackDue() {
    return this.received - this.acked >= this.ackEvery;
  }

  /** Whether any frame arrived unacknowledged. */
  get unacknowledged() {
    return this.received > this.acked;
  }

  /** Mark everything received as acknowledged; returns the count to send. */
  acknowledge() {
    this.acked = this.received;
    return this.received;
  }

  /**
   * @param {number} ms
   * @returns {boolean} whether nothing arrived for longer than `ms`
   */
  silentFor(ms) {
    return this.now() - this.lastReceived > ms;
  }

  /**
   * @param {number} ms
   * @returns {boolean} whether nothing was sent for `ms` or longer
   */
  quietFor(ms) {
    return this.now() - this.lastSent >= ms;
  }

  /**
   * @param {number} ms
   * @returns {boolean} whether the last HTTP heartbeat is `ms` or more ago
   */
  beatDue(ms) {
    return this.now() - this.lastBeat >= ms;
  }
}
