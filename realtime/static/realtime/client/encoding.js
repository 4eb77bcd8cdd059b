// Encoding: base64url, random ids (idempotency keys, client ids) and resume cursors
// (docs/protocol.md#resume-cursors).

import { RealtimeError } from "./codes.js";

/** @typedef {[stream: string, epoch: string, seq: number]} CursorEntry */

/** @param {Uint8Array} bytes */
export function base64url(bytes) {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

/** A random URL-safe id of `bytes` random bytes. */
export function randomId(bytes = 16) {
  return base64url(crypto.getRandomValues(new Uint8Array(bytes)));
}

/**
 * A resume cursor from `[stream, epoch, seq]` entries.
 * @param {Iterable<CursorEntry>} entries
 * @returns {string}
 */
export function encodeCursor(entries) {
  return `1.${base64url(new TextEncoder().encode(JSON.stringify([...entries])))}`;
}

/**
 * The `[stream, epoch, seq]` entries of a resume cursor.
 * @param {string} cursor
 * @returns {CursorEntry[]}
 */
export function decodeCursor(cursor) {
  if (!cursor.startsWith("1.")) throw new RealtimeError("invalid_cursor", "Not a cursor.");
  const body = cursor.slice(2).replaceAll("-", "+").replaceAll("_", "/");
  const binary = atob(body + "=".repeat((4 - (body.length % 4)) % 4));
  return JSON.parse(new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0))));
}
