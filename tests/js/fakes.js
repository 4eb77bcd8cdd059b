// Fakes for the client's unit tests: transports the test plays the server through, a fake
// fetch, and a client on fake time (node:test's mock.timers and a clock stepped with them).
// Runs on Node 18.19 and later (Debian bookworm's nodejs is 18.20).

import { webcrypto } from "node:crypto";
import { mock } from "node:test";

import { RealtimeClient } from "../../realtime/static/realtime/client/client.js";

// Node 18 has Web Crypto, but not as a global.
globalThis.crypto ??= /** @type {Crypto} */ (/** @type {unknown} */ (webcrypto));

let clock = 0;
/** The fake time, in milliseconds: what the client's `now()` reads. */
export const now = () => clock;

/** One connection attempt, played by the test: welcome(), deliver(), drop(), refuse(). */
export class FakeTransport {
  constructor(kind, url, extra, listener, number) {
    this.kind = kind;
    this.url = new URL(url);
    this.protocols = kind === "websocket" ? extra : undefined;
    this.headers = kind === "sse" ? extra : undefined;
    this.listener = listener;
    this.number = number;
    this.welcomed = false;
    this.sent = [];
    this.closedWith = null; // {code, reason} once the client closed it
  }

  // --- the client's side ---

  send(frame) {
    if (this.closedWith || this.kind !== "websocket" || !this.welcomed) return false;
    this.sent.push(structuredClone(frame));
    return true;
  }

  close(code, reason) {
    this.closedWith = { code, reason };
  }

  // --- the server's side ---

  get ended() {
    return this.closedWith !== null || this.dropped === true;
  }

  welcome(fields = {}) {
    this.welcomed = true;
    this.listener.activity(this);
    const frame = { type: "welcome", connection_id: `conn-${this.number}`, heartbeat: 15 };
    this.listener.welcome(this, { ...frame, ...fields });
  }

  deliver(frame, more = false) {
    this.listener.activity(this);
    this.listener.frame(this, frame, more);
  }

  /** The frames the client sent of `type`. */
  sentOf(type) {
    return this.sent.filter((frame) => frame.type === type);
  }

  /** Answer every subscribe sent so far (`seq` and `epoch` per stream, or 0 and "e1"). */
  subscribed(heads = {}) {
    for (const frame of this.sentOf("subscribe")) {
      const [epoch, seq] = heads[frame.stream] || ["e1", 0];
      const recovered = frame.since === undefined || frame.epoch === undefined || frame.epoch === epoch;
      this.deliver({ type: "subscribed", id: frame.id, stream: frame.stream, epoch, seq, recovered });
    }
  }

  drop(code = 1006, reason = "") {
    this.dropped = true;
    this.listener.closed(this, { code, reason, opened: this.welcomed });
  }

  refuse(status, error = null) {
    this.dropped = true;
    const info = { code: 1006, reason: error?.code || "", status, error, opened: false };
    this.listener.closed(this, info);
  }
}

/** A transport factory that keeps every transport it made. */
export function fakeTransports() {
  const made = [];
  const make = (kind) => (url, extra, listener) => {
    const transport = new FakeTransport(kind, url, extra, listener, made.length + 1);
    made.push(transport);
    return transport;
  };
  return { made, factory: { websocket: make("websocket"), sse: make("sse") } };
}

/** Let pending promise callbacks and microtasks run. */
export function flush() {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Fake timers and clock from 0; call the returned function to put the real ones back. */
export function fakeTime() {
  clock = 0;
  mock.timers.enable({ apis: ["setTimeout", "setInterval"] });
  return () => mock.timers.reset();
}

/**
 * Advance the fake time by `ms`, a millisecond at a time (so each timer sees the time it
 * was due at), then let what the timers started run.
 */
export async function advance(ms) {
  mock.timers.tick(0); // the timers due now
  for (let step = 0; step < ms; step++) {
    clock += 1;
    mock.timers.tick(1);
  }
  await flush();
}

/**
 * A client on fake transports, recording its events: `client`, `transports` (all made),
 * `last()` (the newest), `states`, `attempts`, `errors`.
 */
export async function startClient(options = {}) {
  const { made, factory } = fakeTransports();
  const client = new RealtimeClient(
    { url: "http://test", clientId: "c1", workerTimers: false, random: () => 0.5, ...options },
    { transports: factory, now },
  );
  const log = { states: [], attempts: [], errors: [] };
  client.on("state", (change) => log.states.push(change));
  client.on("attempt", (attempt) => log.attempts.push(attempt));
  client.on("error", (error) => log.errors.push(error));
  await flush();
  return {
    client,
    ...log,
    transports: made,
    last: () => made[made.length - 1],
    phase: () => client._connection.phase,
  };
}

/**
 * A fake fetch answering `routes` (a function (url, init) => {status, body}), recording the
 * requests; put it in place with `globalThis.fetch = fake.fetch`.
 */
export function fakeFetch(route) {
  const requests = [];
  const fetch = async (url, init = {}) => {
    const request = { url: String(url), ...init, body: init.body && JSON.parse(init.body) };
    requests.push(request);
    const { status = 200, body = {} } = await route(request);
    return new Response(JSON.stringify(body), {
      status,
      headers: { "Content-Type": "application/json" },
    });
  };
  return { fetch, requests };
}
