// The app's HTTP endpoints, as the client calls them: connection tickets, the heartbeat of an
// SSE connection, and publishing over HTTP (the SSE fallback), with the CSRF token.

import { RealtimeError } from "./codes.js";
import { readCookie } from "./page.js";

/** @import { Options } from "./options.js" */
/** @import { PublishEntry } from "./publish.js" */

export class HttpApi {
  /** @param {Options} options */
  constructor(options) {
    this.options = options;
    /** @type {boolean | undefined} false once a server stored an ephemeral event sent here */
    this.ephemeral = undefined;
  }

  /**
   * The URL of `path` below the app's prefix.
   * @param {string} path
   * @param {URLSearchParams} [params]
   */
  endpoint(path, params) {
    const base = this.options.url + this.options.prefix + path;
    const query = params?.toString();
    return query ? `${base}?${query}` : base;
  }

  /** @returns {Record<string, string>} */
  csrfHeaders() {
    const { csrfToken, csrfCookieName, csrfHeaderName } = this.options;
    const token = typeof csrfToken === "function" ? csrfToken() : csrfToken;
    const value = token || readCookie(csrfCookieName);
    return value ? { [csrfHeaderName]: value } : {};
  }

  /**
   * A connection ticket for the next attempt, or null (no `ticket` option, or not signed in).
   * @returns {Promise<string | null>}
   */
  async ticket() {
    const { ticket } = this.options;
    if (!ticket) return null;
    if (typeof ticket === "function") return ticket();
    const response = await fetch(this.endpoint("ticket/"), {
      method: "POST",
      credentials: "same-origin",
      headers: this.csrfHeaders(),
    });
    if (!response.ok) return null; // not signed in: connect as the session (anonymous)
    return (await response.json()).ticket;
  }

  /**
   * The heartbeat of an SSE connection, with the frames it received (flow control).
   * @param {string} connection
   * @param {number} received
   * @returns {Promise<number>} the HTTP status
   */
  async heartbeat(connection, received) {
    const response = await fetch(this.endpoint("heartbeat/"), {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ connection, received }),
    });
    return response.status;
  }

  /**
   * POST one publish; settles its promise unless the outcome is "retry" (network trouble or
   * 5xx/429 for a stored event: the same idempotency key makes sending it again safe).
   * @param {PublishEntry} entry
   * @returns {Promise<"done" | "retry">}
   */
  async publish(entry) {
    if (entry.ephemeral && this.ephemeral === false) {
      entry.reject(
        new RealtimeError("unsupported", "This server cannot take ephemeral events over HTTP."),
      );
      return "done";
    }
    /** @type {{event: string, data: unknown, ephemeral?: true, key?: string}} */
    const body = { event: entry.event, data: entry.data };
    /** @type {Record<string, string>} */
    const headers = { "Content-Type": "application/json", ...this.csrfHeaders() };
    if (entry.ephemeral) body.ephemeral = true;
    else {
      body.key = entry.key;
      headers["Idempotency-Key"] = /** @type {string} */ (entry.key);
    }
    const url = this.endpoint(`api/streams/${encodeURIComponent(entry.stream)}/events/`);
    let response;
    try {
      response = await fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers,
        body: JSON.stringify(body),
      });
    } catch {
      if (entry.ephemeral) {
        entry.reject(new RealtimeError("disconnected", "The publish request failed."));
        return "done";
      }
      return "retry"; // network trouble: the same key makes a retry safe
    }
    let payload = null;
    try {
      payload = await response.json();
    } catch {
      // no JSON body
    }
    if (response.ok) {
      if (entry.ephemeral && payload?.seq != null && this.ephemeral !== false) {
        // A server whose HTTP API predates `ephemeral` stored the event: send no more.
        this.ephemeral = false;
        console.warn(
          "[realtime] The server stored an ephemeral event sent over HTTP; " +
            "ephemeral events are not sent over the SSE fallback any more.",
        );
      }
      entry.resolve({
        stream: entry.stream,
        seq: payload?.seq ?? null,
        duplicate: Boolean(payload?.duplicate),
      });
      return "done";
    }
    if ((response.status >= 500 || response.status === 429) && !entry.ephemeral) return "retry";
    const error = payload?.error || payload || {};
    const code = error.code || `http_${response.status}`;
    const message = error.message || error.detail || `Publishing failed (${response.status}).`;
    entry.reject(new RealtimeError(code, message, { status: response.status }));
    return "done";
  }
}
