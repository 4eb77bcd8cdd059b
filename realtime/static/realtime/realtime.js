/**
 * The browser client of the `realtime` Django app: protocol 1 (docs/protocol.md).
 *
 * Dependency-free ES modules, served as they are by Django's staticfiles (no build step);
 * this one is the entry point and the public API, the others are in client/, one concern
 * each; types in realtime.d.ts beside it; the guide is docs/client.md.
 *
 *     import { connect } from "realtime";           // {% realtime_client %} maps the name
 *     const rt = connect();
 *     const sub = rt.subscribe("chat:42", { since: 0, onEvent: (e) => show(e) });
 *     await sub.publish("message.created", { text: "hi" });
 *
 * What it does for you: reconnects with exponential backoff and full jitter; resumes every
 * stream exactly (since/epoch) and drops duplicates; repairs a gap by resubscribing; tells
 * you when a stream cannot be recovered; heartbeats from a worker so hidden tabs stay alive;
 * falls back to Server-Sent Events plus HTTP when WebSocket cannot connect, and tries
 * WebSocket again later; queues publishes while disconnected, each with an idempotency key
 * so a publish re-sent after a reconnect is stored once.
 */

// Imports, then one list of re-exports, and no other form: hashed static files
// (ManifestStaticFilesStorage with support_js_module_import_aggregation) are made by
// regular expressions, and re-exporting straight from a module after the example above
// would make them hash its URL twice. No comment before the imports may hold the keyword
// of re-exporting followed by a space (tests/unit/test_client_static.py checks the result).
import { RealtimeClient, connect } from "./client/client.js";
import { PROTOCOL, RealtimeError } from "./client/codes.js";
import { decodeCursor, encodeCursor } from "./client/encoding.js";
import { DEFAULTS } from "./client/options.js";
import { backoffDelay } from "./client/policy.js";
import { Presence } from "./client/presence.js";
import { Subscription } from "./client/subscription.js";

export {
  DEFAULTS,
  PROTOCOL,
  Presence,
  RealtimeClient,
  RealtimeError,
  Subscription,
  backoffDelay,
  connect,
  decodeCursor,
  encodeCursor,
};
