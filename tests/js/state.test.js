// The state machine's table and the reconnect policy, on their own.

import assert from "node:assert/strict";
import { test } from "node:test";

import { ReconnectPolicy, backoffDelay } from "../../realtime/static/realtime/client/policy.js";
import { ConnectionState, StateError, TRANSITIONS } from "../../realtime/static/realtime/client/state.js";

test("the transitions: from each state, where it may go", () => {
  assert.deepEqual(TRANSITIONS, {
    idle: ["connecting"],
    connecting: ["open", "waiting", "closed"],
    open: ["open", "waiting", "closed"],
    waiting: ["reconnecting", "closed"],
    reconnecting: ["open", "waiting", "closed"],
    closed: ["connecting"],
  });
  assert.ok(Object.isFrozen(TRANSITIONS) && Object.values(TRANSITIONS).every(Object.isFrozen));
});

test("a transition the table does not allow throws, naming both states", () => {
  const state = new ConnectionState();
  assert.equal(state.name, "idle");
  assert.throws(() => state.to("open"), (error) => {
    assert.ok(error instanceof StateError);
    assert.match(error.message, /from "idle" to "open" \(from "idle": connecting\)/);
    return true;
  });
  assert.equal(state.name, "idle");
});

test("the public state shows waiting and reconnecting alike; to() returns the previous", () => {
  const state = new ConnectionState();
  const seen = [];
  for (const next of ["connecting", "open", "waiting", "reconnecting", "waiting", "closed"]) {
    const previous = state.to(next);
    seen.push([previous, state.name, state.public, state.attempting]);
  }
  assert.deepEqual(seen, [
    ["idle", "connecting", "connecting", true],
    ["connecting", "open", "open", false],
    ["open", "waiting", "reconnecting", false],
    ["reconnecting", "reconnecting", "reconnecting", true],
    ["reconnecting", "waiting", "reconnecting", false],
    ["reconnecting", "closed", "closed", false],
  ]);
});

test("backoffDelay: full jitter below min(cap, base * 2^attempt)", () => {
  const backoff = { base: 500, cap: 30000 };
  assert.equal(backoffDelay(0, backoff, () => 0), 0);
  assert.equal(backoffDelay(0, backoff, () => 0.999), 499);
  assert.equal(backoffDelay(3, backoff, () => 0.5), 2000);
  assert.equal(backoffDelay(20, backoff, () => 0.5), 15000);
});

const policyOptions = (overrides = {}) => ({
  transports: ["websocket", "sse"],
  fallbackAfter: 2,
  backoff: { base: 500, cap: 30000, maxAttempts: Infinity },
  upgrade: { after: 5000, cap: 300000 },
  random: () => 0.5,
  ...overrides,
});

test("the policy falls back to SSE after fallbackAfter WebSocket failures, and back", () => {
  const policy = new ReconnectPolicy(policyOptions());
  assert.equal(policy.nextTransport(), "websocket");
  policy.failedBeforeOpen("websocket");
  assert.equal(policy.nextTransport(), "websocket");
  policy.failedBeforeOpen("websocket");
  assert.equal(policy.nextTransport(), "sse");
  policy.failedBeforeOpen("sse", 403); // refused: SSE reached the server, stay on it
  assert.equal(policy.nextTransport(), "sse");
  policy.failedBeforeOpen("sse"); // unreachable as well: the server is down, not WebSocket
  assert.equal(policy.nextTransport(), "websocket");
  assert.equal(new ReconnectPolicy(policyOptions({ transports: ["sse"] })).nextTransport(), "sse");
  assert.equal(new ReconnectPolicy(policyOptions({ transports: ["websocket"] })).upgrades, true);
});

test("the policy's retries: counted, widened for 1001 and 4429, bounded by maxAttempts", () => {
  const policy = new ReconnectPolicy(policyOptions({ backoff: { base: 500, cap: 30000, maxAttempts: 6 } }));
  assert.deepEqual(policy.retry(1006), { attempt: 0, delay: 250 });
  assert.deepEqual(policy.retry(1006, true), { attempt: 1, delay: 0 });
  policy.stable();
  assert.deepEqual(policy.retry(1001), { attempt: 2, delay: 1000 });
  assert.deepEqual(policy.retry(4429), { attempt: 4, delay: 4000 });
  policy.forgive();
  assert.deepEqual(policy.retry(1006), { attempt: 4, delay: 4000 });
  assert.deepEqual(policy.retry(1006), { attempt: 5, delay: 8000 });
  assert.equal(policy.retry(1006), null);
  assert.equal(policy.isFatal(4401), true);
  assert.equal(policy.isFatal(1000), false);
});

test("the upgrade delay doubles per failure up to its cap, jittered between half and all", (t) => {
  t.mock.method(Math, "random", () => 0);
  const policy = new ReconnectPolicy(policyOptions({ upgrade: { after: 1000, cap: 3000 } }));
  const delays = [];
  for (let i = 0; i < 4; i++) {
    delays.push(policy.upgradeDelay());
    policy.upgradeFailed();
  }
  assert.deepEqual(delays, [500, 1000, 1500, 1500]);
  policy.opened("websocket");
  assert.equal(policy.upgradeDelay(), 500);
});
