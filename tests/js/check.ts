// realtime.d.ts against the code: each export of the browser client, as its JavaScript and
// JSDoc define it, must be assignable to what realtime.d.ts declares (`make test` runs
// `tsc -p tests/js`). A declaration the code no longer satisfies, a method renamed or
// removed, a result of another shape: each is a type error here.
//
// The implementations are imported from client/, not through realtime.js: TypeScript
// resolves realtime.js to the realtime.d.ts beside it. client.test.js checks that
// realtime.js exports exactly these, and exactly what realtime.d.ts declares.

import type * as Declared from "../../realtime/static/realtime/realtime.js";
import { RealtimeClient, connect } from "../../realtime/static/realtime/client/client.js";
import { PROTOCOL, RealtimeError } from "../../realtime/static/realtime/client/codes.js";
import { decodeCursor, encodeCursor } from "../../realtime/static/realtime/client/encoding.js";
import { DEFAULTS } from "../../realtime/static/realtime/client/options.js";
import { backoffDelay } from "../../realtime/static/realtime/client/policy.js";
import { Presence } from "../../realtime/static/realtime/client/presence.js";
import { Subscription } from "../../realtime/static/realtime/client/subscription.js";

/** Fails to compile unless T is true. */
type Assert<T extends true> = T;
/** true when A and B are the same type. */
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;

// Values and functions: the code's is assignable to the declared.
export const values: {
  PROTOCOL: typeof Declared.PROTOCOL;
  DEFAULTS: typeof Declared.DEFAULTS;
  connect: typeof Declared.connect;
  backoffDelay: typeof Declared.backoffDelay;
  encodeCursor: typeof Declared.encodeCursor;
  decodeCursor: typeof Declared.decodeCursor;
  RealtimeClient: typeof Declared.RealtimeClient;
  RealtimeError: typeof Declared.RealtimeError;
} = { PROTOCOL, DEFAULTS, connect, backoffDelay, encodeCursor, decodeCursor, RealtimeClient, RealtimeError };

// Classes the application gets but does not construct: their instances.
export const instances: {
  client: Declared.RealtimeClient;
  subscription: Declared.Subscription;
  presence: Declared.Presence;
  error: Declared.RealtimeError;
} = {
  client: null as unknown as RealtimeClient,
  subscription: null as unknown as Subscription,
  presence: null as unknown as Presence,
  error: null as unknown as RealtimeError,
};

// What the code hands to the application has the declared shape both ways (not merely
// assignable): the states, the results of publish() and of a subscription's lifecycle.
type Resolved<T> = T extends Promise<infer R> ? R : never;
export type Checks = [
  Assert<Same<RealtimeClient["state"], Declared.State>>,
  Assert<Same<RealtimeClient["transport"], Declared.Transport | null>>,
  Assert<Same<Resolved<ReturnType<RealtimeClient["publish"]>>, Declared.PublishResult>>,
  Assert<Same<Resolved<Subscription["ready"]>, Declared.SubscribedInfo>>,
  Assert<Same<Subscription["state"], Declared.Subscription["state"]>>,
  Assert<Same<Subscription["position"], Declared.Subscription["position"]>>,
  Assert<Same<Presence["count"], Declared.PresenceCount | null>>,
  Assert<Same<ReturnType<Presence["list"]>, Declared.PresenceMember[]>>,
];
