// The Server-Sent Events transport: one event-stream request, read with fetch.
//
// fetch rather than EventSource: the client sees the HTTP status and the error body of a
// refusal, sees the keep-alive comments (so it can tell a silent connection from a quiet
// one), can send a ticket header, and reconnects with its own backoff instead of
// EventSource's fixed, unjittered retry.

import { CLOSE_ABNORMAL, CLOSE_SERVICE_RESTART } from "./codes.js";

/** @import { CloseInfo, Frame, Transport, TransportListener } from "./transport.js" */

/** @implements {Transport} */
export class EventStreamTransport {
  /**
   * @param {string} url
   * @param {Record<string, string>} headers
   * @param {TransportListener} listener
   */
  constructor(url, headers, listener) {
    /** @type {"sse"} */
    this.kind = "sse";
    this.listener = listener;
    this.welcomed = false;
    this.done = false;
    /** @type {number | undefined} a `retry:` field after the welcome: a draining server's */
    this.retryAfter = undefined;
    this.abort = new AbortController();
    /** @type {{data: string[], name: string}} */
    this._event = { data: [], name: "" };
    this._run(url, headers);
  }

  /**
   * @param {string} url
   * @param {Record<string, string>} headers
   */
  async _run(url, headers) {
    let response;
    try {
      response = await fetch(url, {
        headers: { Accept: "text/event-stream", ...headers },
        credentials: "same-origin",
        cache: "no-store",
        signal: this.abort.signal,
      });
    } catch (error) {
      this._end({ code: CLOSE_ABNORMAL, reason: errorText(error) });
      return;
    }
    if (!response.ok || !response.body) {
      let error = null;
      try {
        error = (await response.json()).error || null;
      } catch {
        // not our JSON: a proxy's page
      }
      const info = { code: CLOSE_ABNORMAL, status: response.status, error };
      this._end({ ...info, reason: error?.code || "" });
      return;
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.done) break;
        this.listener.activity(this);
        buffer += value;
        const lines = buffer.split(/\r\n|\r|\n/);
        buffer = lines.pop() || "";
        for (const line of lines) this._line(line);
      }
    } catch (error) {
      this._end({ code: CLOSE_ABNORMAL, reason: errorText(error) });
      return;
    }
    if (this.retryAfter !== undefined) {
      // A draining server ended the stream after saying when to come back.
      this._end({ code: CLOSE_SERVICE_RESTART, reason: "restart", retryAfter: this.retryAfter });
      return;
    }
    this._end({ code: CLOSE_ABNORMAL, reason: "the event stream ended" });
  }

  /** @param {string} line */
  _line(line) {
    if (this.done) return;
    const event = this._event;
    if (line === "") {
      if (event.data.length) this._dispatch(event.name, event.data.join("\n"));
      this._event = { data: [], name: "" };
      return;
    }
    if (line.startsWith(":")) return; // keep-alive comment: activity() already saw it
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "data") event.data.push(value);
    else if (field === "event") event.name = value;
    // The welcome's retry: is the usual hint; one after it comes from a draining server.
    else if (field === "retry" && this.welcomed && /^\d+$/.test(value)) this.retryAfter = Number(value);
  }

  /**
   * @param {string} name
   * @param {string} data
   */
  _dispatch(name, data) {
    /** @type {Frame} */
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (name === "realtime.welcome" && !this.welcomed) {
      this.welcomed = true;
      this.listener.welcome(this, frame);
    } else {
      this.listener.frame(this, frame);
    }
  }

  /** @param {Omit<CloseInfo, "opened">} info */
  _end(info) {
    if (this.done) return;
    this.done = true;
    this.abort.abort();
    this.listener.closed(this, { ...info, opened: this.welcomed });
  }

  send() {
    return false;
  }

  close() {
    this.done = true;
    this.abort.abort();
  }
}

/** @param {unknown} error */
function errorText(error) {
  return String(/** @type {Error | undefined} */ (error)?.message || error);
}
