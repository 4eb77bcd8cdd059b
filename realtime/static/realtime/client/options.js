// Options: the defaults of connect(), merged with the page's configuration and the caller's.

import { RealtimeError } from "./codes.js";
import { pageConfig, pageOrigin } from "./page.js";

/** Defaults of every option of connect(); see docs/client.md. */
export const DEFAULTS = Object.freeze({
  url: undefined, // origin of the server; default: the page's (location.origin)
  prefix: "/realtime/", // where the app is mounted on that origin
  transports: /** @type {Array<"websocket" | "sse">} */ (["websocket", "sse"]), // preferred first
  backoff: Object.freeze({ base: 500, cap: 30000, maxAttempts: Infinity, stableAfter: 5000 }),
  connectTimeout: 10000, // ms from opening to the welcome frame
  fallbackAfter: 2, // WebSocket attempts that fail before opening, then try SSE
  upgrade: Object.freeze({ after: 5000, cap: 300000 }), // on SSE: when to retry WebSocket
  maxQueue: 100, // publishes held while disconnected
  rateLimit: Object.freeze({ rate: 40, burst: 80 }), // frames/s sent; below the server's 50/100
  clientId: undefined, // anonymous presence key; default: one per browser in localStorage
  csrfToken: undefined, // string or () => string; default: read the CSRF cookie
  csrfCookieName: "csrftoken",
  csrfHeaderName: "X-CSRFToken",
  ticket: undefined, // () => ticket | Promise<ticket>, or true to POST {prefix}ticket/
  workerTimers: true, // heartbeat timer in a worker (hidden tabs throttle page timers)
  random: Math.random, // the jitter's source; tests pin it
  debug: false,
});

/**
 * The options a client runs with: every one present.
 * @typedef {object} Options
 * @property {string} url
 * @property {string} prefix
 * @property {Array<"websocket" | "sse">} transports
 * @property {{base: number, cap: number, maxAttempts: number, stableAfter: number}} backoff
 * @property {number} connectTimeout
 * @property {number} fallbackAfter
 * @property {{after: number, cap: number}} upgrade
 * @property {number} maxQueue
 * @property {{rate: number, burst: number}} rateLimit
 * @property {string | null | undefined} clientId
 * @property {string | (() => string | null | undefined) | undefined} csrfToken
 * @property {string} csrfCookieName
 * @property {string} csrfHeaderName
 * @property {true | (() => string | null | Promise<string | null>) | undefined} ticket
 * @property {boolean} workerTimers
 * @property {() => number} random
 * @property {boolean} debug
 */

/**
 * DEFAULTS, then the page's configuration, then `options`; groups merged key by key.
 * @param {Record<string, any>} options
 * @returns {Options}
 */
export function resolveOptions(options) {
  const config = pageConfig();
  const merged = { ...DEFAULTS, ...config, ...options };
  for (const group of /** @type {const} */ (["backoff", "upgrade", "rateLimit"])) {
    merged[group] = { ...DEFAULTS[group], ...(config[group] || {}), ...(options[group] || {}) };
  }
  merged.url = (merged.url || pageOrigin()).replace(/\/+$/, "");
  merged.prefix = `/${merged.prefix.replace(/^\/+|\/+$/g, "")}/`.replace("//", "/");
  const unknown = merged.transports.filter((/** @type {string} */ t) => t !== "websocket" && t !== "sse");
  if (!merged.transports.length || unknown.length) {
    throw new RealtimeError("invalid_option", 'transports: a list of "websocket" and "sse".');
  }
  return /** @type {Options} */ (merged);
}
