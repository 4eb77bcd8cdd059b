// The client's connection state machine, driven through fake transports on fake time:
// connecting and opening, retries with backoff, resume from the last seq, the fatal close
// codes, close() and reconnect(), the publish queue, the SSE fallback and the upgrade back
// to WebSocket, dead connections and flow control.

import assert from "node:assert/strict";
import { test } from "node:test";

import { decodeCursor } from "../../realtime/static/realtime/client/encoding.js";
import { EventStreamTransport } from "../../realtime/static/realtime/client/sse.js";
import { advance, fakeFetch, fakeTime, flush, startClient } from "./fakes.js";

const event = (stream, seq, data = seq) => ({ type: "event", stream, seq, event: "tick", data, ts: "t" });
const lastState = (rt) => rt.states[rt.states.length - 1];
const settle = (promise) => promise.then((ok) => ({ ok }), (error) => ({ error: error.code }));

test("connects over WebSocket: connecting, one attempt, open on the welcome", async (t) => {
  t.after(fakeTime());
  const rt = await startClient();
  assert.equal(rt.client.state, "connecting");
  assert.equal(rt.transports.length, 1);
  const ws = rt.last();
  assert.equal(ws.kind, "websocket");
  assert.equal(ws.url.href, "ws://test/realtime/ws/?client_id=c1&batch=1");
  assert.deepEqual(ws.protocols, ["realtime.v1"]);
  assert.deepEqual(rt.attempts, [{ attempt: 0, transport: "websocket", reason: "initial" }]);

  ws.welcome();
  assert.equal(rt.client.state, "open");
  assert.equal(rt.client.transport, "websocket");
  assert.equal(rt.client.connectionId, "conn-1");
  assert.equal(rt.client.heartbeat, 15);
  assert.deepEqual(rt.states, [
    { state: "open", previous: "connecting", transport: "websocket", attempt: 0, connectionId: "conn-1" },
  ]);
  rt.client.close();
});

test("a dropped connection is retried after a jittered backoff and resumes from the last seq", async (t) => {
  t.after(fakeTime());
  const rt = await startClient();
  const sub = rt.client.subscribe("s", { since: 0 });
  const seen = [];
  sub.on("*", (e) => seen.push(e.seq));
  const ws1 = rt.last();
  ws1.welcome();
  assert.deepEqual(ws1.sentOf("subscribe"), [{ type: "subscribe", id: 1, stream: "s", since: 0 }]);
  ws1.subscribed({ s: ["e1", 2] });
  ws1.deliver(event("s", 1));
  ws1.deliver(event("s", 2));
  assert.deepEqual(seen, [1, 2]);

  ws1.drop(1006, "gone");
  assert.equal(rt.client.state, "reconnecting");
  assert.equal(rt.phase(), "waiting");
  assert.equal(rt.client.transport, null);
  assert.deepEqual(lastState(rt), {
    state: "reconnecting", previous: "open", transport: null, attempt: 0, delay: 250, code: 1006, reason: "gone",
  });
  await advance(249);
  assert.equal(rt.transports.length, 1, "retried before its delay");
  await advance(1);
  assert.equal(rt.transports.length, 2);
  assert.equal(rt.phase(), "reconnecting");
  assert.equal(rt.client.state, "reconnecting");
  assert.deepEqual(rt.attempts[1], { attempt: 1, transport: "websocket", reason: "retry" });

  const ws2 = rt.last();
  ws2.welcome();
  assert.deepEqual(lastState(rt), {
    state: "open", previous: "reconnecting", transport: "websocket", attempt: 1, connectionId: "conn-2",
  });
  assert.deepEqual(ws2.sentOf("subscribe"), [{ type: "subscribe", id: 2, stream: "s", since: 2, epoch: "e1" }]);
  ws2.subscribed({ s: ["e1", 3] });
  ws2.deliver(event("s", 2)); // a duplicate: dropped
  ws2.deliver(event("s", 3));
  assert.deepEqual(seen, [1, 2, 3]);
  assert.equal(sub.duplicates, 1);
  rt.client.close();
});

test("failures before opening grow the backoff; a stable connection starts it over", async (t) => {
  t.after(fakeTime());
  const rt = await startClient({ transports: ["websocket"] });
  const delays = [];
  for (let i = 0; i < 3; i++) {
    rt.last().drop();
    delays.push(lastState(rt).delay);
    await advance(lastState(rt).delay);
  }
  assert.deepEqual(delays, [250, 500, 1000]); // random 0.5 of 500, 1000, 2000
  assert.deepEqual(rt.states.map((s) => s.attempt), [0, 1, 2]);
  rt.last().welcome();
  await advance(4999); // not yet stable
  rt.last().drop();
  assert.deepEqual([lastState(rt).attempt, lastState(rt).delay], [3, 2000]);
  await advance(2000);
  rt.last().welcome();
  await advance(5000); // stable: the next failure is the first again
  rt.last().drop();
  assert.deepEqual([lastState(rt).attempt, lastState(rt).delay], [0, 250]);
  rt.client.close();
});

test("going away (1001) spreads the retry wider; rate-limited (4429) backs off further", async (t) => {
  t.after(fakeTime());
  const rt = await startClient({ transports: ["websocket"] });
  rt.last().welcome();
  rt.last().drop(1001, "deploy");
  assert.deepEqual([lastState(rt).attempt, lastState(rt).delay, lastState(rt).code], [2, 1000, 1001]);
  await advance(1000);
  rt.last().welcome();
  await advance(5000);
  rt.last().drop(4429);
  assert.deepEqual([lastState(rt).attempt, lastState(rt).delay], [4, 4000]);
  rt.client.close();
});

test("a draining server (1012) is left for the delay it gave, then the client resumes", async (t) => {
  t.after(fakeTime());
  const rt = await startClient();
  const sub = rt.client.subscribe("s", { since: 0 });
  const ws1 = rt.last();
  ws1.welcome();
  ws1.subscribed({ s: ["e1", 1] });
  ws1.deliver(event("s", 1));
  // Far past the backoff's first delay (250 ms here): the server's delay wins.
  ws1.drop(1012, '{"retry":3210}');
  assert.deepEqual(lastState(rt), {
    state: "reconnecting", previous: "open", transport: null, attempt: 0, delay: 3210, code: 1012,
    reason: '{"retry":3210}',
  });
  await advance(3209);
  assert.equal(rt.transports.length, 1, "reconnected before the server's delay");
  await advance(1);
  assert.equal(rt.transports.length, 2);
  const ws2 = rt.last();
  ws2.welcome();
  assert.deepEqual(ws2.sentOf("subscribe"), [{ type: "subscribe", id: 2, stream: "s", since: 1, epoch: "e1" }]);
  ws2.subscribed({ s: ["e1", 1] });
  assert.equal(sub.state, "active");
  // A 1012 without a delay (another server) falls back to the backoff.
  await advance(5000);
  ws2.drop(1012, "");
  assert.deepEqual([lastState(rt).delay, lastState(rt).code], [250, 1012]);
  rt.client.close();
});

test("a draining server's SSE retry: field after the welcome sets the reconnect delay", async (t) => {
  t.after(fakeTime());
  const rt = await startClient({ transports: ["sse"] });
  rt.client.subscribe("s");
  await advance(0);
  const sse = rt.last();
  assert.equal(sse.kind, "sse");
  sse.welcome();
  sse.listener.closed(sse, { code: 1012, reason: "restart", retryAfter: 1500, opened: true });
  assert.deepEqual([lastState(rt).delay, lastState(rt).code], [1500, 1012]);
  await advance(1499);
  assert.equal(rt.transports.length, 1);
  await advance(1);
  assert.equal(rt.transports.length, 2);
  rt.client.close();
});

test("the SSE transport reports a retry: field after the welcome as a restart with its delay", async (t) => {
  const realFetch = globalThis.fetch;
  t.after(() => { globalThis.fetch = realFetch; });
  const welcome = 'retry: 2000\nevent: realtime.welcome\ndata: {"type":"welcome","connection_id":"c","heartbeat":15}\n\n';
  const ends = async (body) => {
    globalThis.fetch = async () => new Response(body, { headers: { "Content-Type": "text/event-stream" } });
    const seen = [];
    const listener = {
      activity() {},
      welcome: () => seen.push("welcome"),
      frame() {},
      closed: (_, info) => seen.push(info),
    };
    new EventStreamTransport("http://test/realtime/sse/", {}, listener);
    for (let i = 0; i < 100 && seen.length < 2; i++) await flush();
    return seen;
  };
  assert.deepEqual(await ends(welcome + "retry: 1234\n\n"), [
    "welcome", { code: 1012, reason: "restart", retryAfter: 1234, opened: true },
  ]);
  // The welcome's own retry: is the usual hint, not a restart.
  assert.deepEqual(await ends(welcome), [
    "welcome", { code: 1006, reason: "the event stream ended", opened: true },
  ]);
});

test("a fatal close code (4401, revoked) closes for good: no retry, publishes fail", async (t) => {
  t.after(fakeTime());
  const rt = await startClient();
  rt.last().welcome();
  const published = settle(rt.client.publish("s", "m", 1)); // in flight when revoked
  assert.equal(rt.last().sentOf("publish").length, 1);
  rt.last().drop(4401, "revoked");
  assert.equal(rt.client.state, "closed");
  assert.equal(rt.phase(), "closed");
  assert.deepEqual(lastState(rt), {
    state: "closed", previous: "open", transport: null, code: 4401, reason: "revoked",
  });
  assert.deepEqual(rt.errors.map((e) => e.code), ["revoked"]);
  assert.deepEqual(await published, { error: "revoked" });
  await advance(120_000);
  assert.equal(rt.transports.length, 1);
});

test("close() by the user: no retry, waiting publishes rejected; reconnect() starts again", async (t) => {
  t.after(fakeTime());
  const rt = await startClient();
  const sub = rt.client.subscribe("s");
  const ws = rt.last();
  ws.welcome();
  ws.drop();
  const queued = settle(rt.client.publish("s", "m", 1));
  rt.client.close();
  assert.deepEqual(lastState(rt), {
    state: "closed", previous: "reconnecting", transport: null, code: 1000, reason: "closed",
  });
  assert.deepEqual(await queued, { error: "closed" });
  assert.throws(() => rt.client.subscribe("t"), { code: "closed" });
  assert.deepEqual(await settle(rt.client.publish("s", "m", 2)), { error: "closed" });
  await advance(120_000);
  assert.equal(rt.transports.length, 1);
  assert.deepEqual(rt.errors, []);

  rt.client.reconnect();
  assert.deepEqual(lastState(rt), { state: "connecting", previous: "closed", transport: null, attempt: 0 });
  await flush();
  assert.equal(rt.transports.length, 2);
  assert.equal(rt.attempts.at(-1).reason, "manual");
  rt.last().welcome();
  assert.equal(rt.client.state, "open");
  assert.deepEqual(rt.last().sentOf("subscribe").map((f) => f.stream), [sub.stream]);

  // close() of an open connection closes its transport with 1000.
  const open = rt.last();
  rt.client.close();
  assert.deepEqual(open.closedWith, { code: 1000, reason: "closed" });
  assert.deepEqual(lastState(rt).previous, "open");
});

test("reconnect() while waiting retries at once; during an attempt it does nothing", async (t) => {
  t.after(fakeTime());
  const rt = await startClient({ backoff: { base: 60_000, cap: 60_000 } });
  rt.client.reconnect(); // the first attempt is under way
  await flush();
  assert.equal(rt.transports.length, 1);
  rt.last().welcome();
  rt.last().drop();
  assert.equal(lastState(rt).delay, 30_000);
  rt.client.reconnect();
  await flush();
  assert.equal(rt.transports.length, 2);
  assert.equal(rt.attempts.at(-1).reason, "manual");
  rt.client.close();
});

test("after backoff.maxAttempts failed retries the client gives up", async (t) => {
  t.after(fakeTime());
  const rt = await startClient({ transports: ["websocket"], backoff: { maxAttempts: 2 } });
  rt.last().drop();
  await advance(lastState(rt).delay);
  rt.last().drop();
  await advance(lastState(rt).delay);
  rt.last().drop();
  assert.deepEqual(rt.states.map((s) => s.state), ["reconnecting", "reconnecting", "closed"]);
  assert.equal(lastState(rt).reason, "max_attempts");
  assert.deepEqual(rt.errors.map((e) => e.code), ["max_attempts"]);
  await advance(120_000);
  assert.equal(rt.transports.length, 3);
});

test("no welcome within connectTimeout: the attempt is given up (4001) and retried", async (t) => {
  t.after(fakeTime());
  const rt = await startClient({ connectTimeout: 3000 });
  await advance(2999);
  assert.equal(rt.last().closedWith, null);
  await advance(1);
  assert.deepEqual(rt.last().closedWith, { code: 4001, reason: "no welcome" });
  assert.deepEqual([lastState(rt).state, lastState(rt).code, lastState(rt).reason], ["reconnecting", 4001, "timeout"]);
  rt.client.close();
});

test("publishes queue while disconnected, go out after the subscribes, and are re-sent with their key", async (t) => {
  t.after(fakeTime());
  const rt = await startClient({ transports: ["websocket"], maxQueue: 2 });
  rt.client.subscribe("s");
  const first = rt.client.publish("s", "m", 1);
  const second = rt.client.publish("s", "m", 2, { key: "k-2" });
  assert.deepEqual(await settle(rt.client.publish("s", "m", 3)), { error: "queue_full" });
  const ephemeral = rt.client.publish("s", "cursor", {}, { ephemeral: true });
  assert.deepEqual(await settle(ephemeral), { error: "disconnected" });

  const ws1 = rt.last();
  ws1.welcome();
  assert.deepEqual(ws1.sent.map((f) => f.type), ["subscribe", "publish", "publish"]);
  const [p1, p2] = ws1.sentOf("publish");
  assert.deepEqual(p2, { type: "publish", id: p2.id, stream: "s", event: "m", data: 2, key: "k-2" });
  assert.match(p1.key, /^[A-Za-z0-9_-]{22}$/);
  ws1.deliver({ type: "ack", id: p1.id, seq: 7 });
  assert.deepEqual(await first, { stream: "s", seq: 7, duplicate: false });

  ws1.drop(); // the second one's ack is lost with the connection
  await advance(lastState(rt).delay);
  const ws2 = rt.last();
  ws2.welcome();
  assert.deepEqual(ws2.sent.map((f) => f.type), ["subscribe", "publish"]);
  const [again] = ws2.sentOf("publish");
  assert.equal(again.key, "k-2");
  assert.notEqual(again.id, p2.id);
  ws2.deliver({ type: "ack", id: again.id, seq: 8, duplicate: true });
  assert.deepEqual(await second, { stream: "s", seq: 8, duplicate: true });
  rt.client.close();
});

test("a publish larger than the server's max_frame is refused without being sent", async (t) => {
  t.after(fakeTime());
  const rt = await startClient();
  rt.last().welcome({ max_frame: 200 });
  assert.equal(rt.client.maxFrame, 200);
  const big = await settle(rt.client.publish("s", "m", "x".repeat(300)));
  assert.deepEqual(big, { error: "frame_too_large" });
  assert.deepEqual(rt.last().sentOf("publish"), []);
  assert.equal(rt.client.state, "open");
  rt.client.close();
});

test("WebSocket failing before it opens falls back to SSE, which upgrades back to WebSocket", async (t) => {
  t.after(fakeTime());
  t.mock.method(Math, "random", () => 0.5);
  const http = fakeFetch(() => ({ status: 201, body: { seq: 2, duplicate: false } }));
  t.mock.method(globalThis, "fetch", http.fetch);
  const rt = await startClient({ upgrade: { after: 1000, cap: 8000 } });
  const sub = rt.client.subscribe("s", { since: 0 });
  const seen = [];
  sub.on("*", (e) => seen.push(e.seq));
  await flush();
  rt.last().drop();
  await advance(lastState(rt).delay);
  rt.last().drop(); // fallbackAfter (2) WebSocket attempts failed before opening
  await advance(lastState(rt).delay);
  const sse = rt.last();
  assert.equal(sse.kind, "sse");
  assert.equal(rt.attempts.at(-1).transport, "sse");
  assert.equal(sse.url.origin + sse.url.pathname, "http://test/realtime/sse/");
  assert.deepEqual(sse.url.searchParams.getAll("stream"), ["s"]);
  assert.deepEqual(decodeCursor(sse.url.searchParams.get("last_event_id")), [["s", "", 0]]);

  sse.welcome();
  assert.deepEqual([rt.client.state, rt.client.transport], ["open", "sse"]);
  sse.deliver({ type: "subscribed", id: null, stream: "s", epoch: "e1", seq: 1, recovered: true });
  sse.deliver(event("s", 1));
  // Over SSE, publishes are HTTP requests with an idempotency key.
  const result = await rt.client.publish("s", "m", { text: "hi" });
  assert.deepEqual(result, { stream: "s", seq: 2, duplicate: false });
  const [request] = http.requests;
  assert.equal(request.url, "http://test/realtime/api/streams/s/events/");
  assert.equal(request.method, "POST");
  assert.equal(request.headers["Idempotency-Key"], request.body.key);
  assert.deepEqual(request.body, { event: "m", data: { text: "hi" }, key: request.body.key });
  sse.deliver(event("s", 2));

  // After upgrade.after (jittered: 0.75 of it here) the client tries WebSocket beside SSE.
  await advance(749);
  assert.equal(rt.last(), sse);
  await advance(1);
  const probe = rt.last();
  assert.equal(probe.kind, "websocket");
  assert.deepEqual([rt.client.state, rt.client.transport], ["open", "sse"]);
  probe.welcome();
  assert.deepEqual(lastState(rt), {
    state: "open", previous: "open", transport: "websocket", attempt: 2, connectionId: `conn-${probe.number}`,
  });
  assert.notEqual(sse.closedWith, null, "the event stream was not closed");
  assert.deepEqual(probe.sentOf("subscribe"), [{ type: "subscribe", id: 1, stream: "s", since: 2, epoch: "e1" }]);
  probe.subscribed({ s: ["e1", 3] });
  probe.deliver(event("s", 3));
  assert.deepEqual(seen, [1, 2, 3]);
  rt.client.close();
});

test("SSE refused for good (403 not naming a stream) closes; a refused stream fails alone", async (t) => {
  t.after(fakeTime());
  const rt = await startClient({ transports: ["sse"] });
  assert.deepEqual(rt.transports, []); // nothing to receive yet: open on SSE without a request
  assert.deepEqual([rt.client.state, rt.client.transport], ["open", "sse"]);
  assert.equal(lastState(rt).idle, true);
  const ok = rt.client.subscribe("ok");
  const denied = rt.client.subscribe("denied");
  const failure = settle(denied.ready);
  await advance(0);
  const first = rt.last();
  assert.deepEqual(first.url.searchParams.getAll("stream"), ["ok", "denied"]);
  first.refuse(403, { code: "forbidden", message: "Not allowed to subscribe 'denied'." });
  assert.deepEqual(await failure, { error: "forbidden" });
  assert.equal(rt.client.subscription("denied"), undefined);
  assert.equal(lastState(rt).attempt, 0); // not the server's fault: not counted
  await advance(lastState(rt).delay);
  assert.deepEqual(rt.last().url.searchParams.getAll("stream"), [ok.stream]);
  rt.last().refuse(403, { code: "forbidden", message: "Sign in." });
  assert.deepEqual(lastState(rt), { state: "closed", previous: "reconnecting", transport: null, code: 403, reason: "forbidden" });
  assert.deepEqual(rt.errors.map((e) => e.code), ["forbidden"]);
});

test("a silent connection is dead after twice the heartbeat: closed (4000) and retried", async (t) => {
  t.after(fakeTime());
  const rt = await startClient();
  const ws = rt.last();
  ws.welcome({ heartbeat: 1 }); // ticks every 250 ms
  await advance(250);
  assert.deepEqual(ws.sent, [{ type: "received", count: 1 }]); // the welcome, acknowledged
  await advance(500);
  assert.deepEqual(ws.sentOf("ping").length, 1); // nothing sent for half the interval
  ws.deliver({ type: "pong" });
  await advance(2000);
  assert.equal(ws.closedWith, null); // silent for twice the interval, not longer
  await advance(250);
  assert.deepEqual(ws.closedWith, { code: 4000, reason: "silent" });
  assert.deepEqual([lastState(rt).state, lastState(rt).code, lastState(rt).reason], ["reconnecting", 4000, "silent"]);
  rt.client.close();
});

test("going back online while waiting retries at once", async (t) => {
  t.after(fakeTime());
  const page = new EventTarget();
  globalThis.addEventListener = page.addEventListener.bind(page);
  globalThis.removeEventListener = page.removeEventListener.bind(page);
  t.after(() => {
    delete globalThis.addEventListener;
    delete globalThis.removeEventListener;
  });
  const rt = await startClient({ backoff: { base: 60_000, cap: 60_000 } });
  rt.last().welcome();
  rt.last().drop();
  assert.equal(rt.phase(), "waiting");
  page.dispatchEvent(new Event("online"));
  await flush();
  assert.equal(rt.transports.length, 2);
  assert.equal(rt.attempts.at(-1).reason, "online");
  rt.client.close();
  page.dispatchEvent(new Event("online")); // closed: no longer listening
  await flush();
  assert.equal(rt.transports.length, 2);
});

test("flow control: frames are acknowledged every quarter window, once per batch", async (t) => {
  t.after(fakeTime());
  const rt = await startClient();
  const ws = rt.last();
  ws.welcome({ window: { messages: 12 } }); // acknowledge every 3 frames
  ws.deliver({ type: "pong" });
  assert.deepEqual(ws.sentOf("received"), []);
  ws.deliver({ type: "pong" }, true); // a batch of three: one acknowledgement at its end
  ws.deliver({ type: "pong" }, true);
  ws.deliver({ type: "pong" }, false);
  assert.deepEqual(ws.sentOf("received"), [{ type: "received", count: 5 }]);
  assert.equal(rt.client._connection.received, 5);
  rt.client.close();
});
