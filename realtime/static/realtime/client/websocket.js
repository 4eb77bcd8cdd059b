// The WebSocket transport: one connection attempt; parses frames, unpacks batches.

import { CLOSE_NORMAL } from "./codes.js";

/** @import { ClientFrame, Frame, Transport, TransportListener } from "./transport.js" */

/** @implements {Transport} */
export class WebSocketTransport {
  /**
   * @param {string} url
   * @param {string[]} protocols
   * @param {TransportListener} listener
   */
  constructor(url, protocols, listener) {
    /** @type {"websocket"} */
    this.kind = "websocket";
    this.listener = listener;
    this.welcomed = false;
    this.done = false;
    this.ws = new WebSocket(url, protocols);
    this.ws.onmessage = (message) => this._message(message);
    this.ws.onclose = (close) => this._end(close.code, close.reason);
    this.ws.onerror = () => {}; // a close event follows with the details there are
  }

  /** @param {MessageEvent} message */
  _message({ data }) {
    if (this.done || typeof data !== "string") return;
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    this.listener.activity(this);
    if (frame?.type === "batch" && Array.isArray(frame.frames)) {
      // Several frames in one message (docs/protocol.md#batch, asked for with ?batch=1):
      // each is handled, and counted for flow control, as if it had come alone.
      const { frames } = frame;
      for (let i = 0; i < frames.length && !this.done; i++) {
        this._frame(frames[i], i < frames.length - 1);
      }
    } else {
      this._frame(frame, false);
    }
  }

  /**
   * One server frame; `more`: others of the same batch follow it at once.
   * @param {Frame} frame
   * @param {boolean} more
   */
  _frame(frame, more) {
    if (!frame || typeof frame !== "object") return;
    if (!this.welcomed && frame.type === "welcome") {
      this.welcomed = true;
      this.listener.welcome(this, frame);
    } else {
      this.listener.frame(this, frame, more);
    }
  }

  /**
   * @param {number} code
   * @param {string} reason
   */
  _end(code, reason) {
    if (this.done) return;
    this.done = true;
    this.listener.closed(this, { code, reason, opened: this.welcomed });
  }

  /** @param {ClientFrame} frame */
  send(frame) {
    if (this.done || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  close(code = CLOSE_NORMAL, reason = "") {
    this.done = true;
    try {
      this.ws.close(code, reason);
    } catch {
      this.ws.close();
    }
  }
}
