// Types of realtime.js, the browser client of the `realtime` Django app (protocol 1).
// Guide: docs/client.md. Wire protocol: docs/protocol.md.

export declare const PROTOCOL: 1;

/** Options of {@link connect}. Every one is optional; see {@link DEFAULTS}. */
export interface ConnectOptions {
  /** Origin of the server, e.g. "https://example.com". Default: the page's origin. */
  url?: string;
  /** Where `realtime.urls` is mounted on that origin. Default "/realtime/". */
  prefix?: string;
  /** Transports in order of preference. Default ["websocket", "sse"]. */
  transports?: Array<"websocket" | "sse">;
  backoff?: BackoffOptions;
  /** Milliseconds from opening a connection to its welcome frame. Default 10000. */
  connectTimeout?: number;
  /** WebSocket attempts in a row that fail before opening, then SSE is tried. Default 2. */
  fallbackAfter?: number;
  /** On SSE, when to try WebSocket again: after `after` ms (0.5-1x, jittered), doubling
   *  per failure up to `cap`. Default {after: 5000, cap: 300000}. */
  upgrade?: { after?: number; cap?: number };
  /** Publishes held while disconnected; beyond it publish() rejects with "queue_full".
   *  Default 100. */
  maxQueue?: number;
  /** Frames sent per second (sustained, burst), kept under the server's RATE_LIMIT.
   *  Default {rate: 40, burst: 80}. */
  rateLimit?: { rate?: number; burst?: number };
  /** Anonymous presence key. Default: one per browser, kept in localStorage; null: none. */
  clientId?: string | null;
  /** CSRF token for HTTP publishes under session authentication. Default: the cookie. */
  csrfToken?: string | (() => string | null | undefined);
  /** Default "csrftoken" (Django's CSRF_COOKIE_NAME). */
  csrfCookieName?: string;
  /** Default "X-CSRFToken" (Django's CSRF_HEADER_NAME). */
  csrfHeaderName?: string;
  /** A connection ticket for each connection: a function returning one, or true to POST
   *  `{prefix}ticket/` (signed-in pages). Default: none (the session cookie is used). */
  ticket?: true | (() => string | null | Promise<string | null>);
  /** Run the heartbeat timer in a worker, which hidden tabs do not throttle. Default true. */
  workerTimers?: boolean;
  /** The source of the backoff's jitter, in [0, 1). Default Math.random. */
  random?: () => number;
  /** Log what the client does with console.debug. Default false. */
  debug?: boolean;
}

export interface BackoffOptions {
  /** Milliseconds: the first retry waits up to this. Default 500. */
  base?: number;
  /** Milliseconds: no retry waits longer. Default 30000. */
  cap?: number;
  /** Failed retries in a row before giving up (state "closed", reason "max_attempts").
   *  Default Infinity. */
  maxAttempts?: number;
  /** Milliseconds a connection must stay open for the backoff to start over. Default 5000. */
  stableAfter?: number;
}

export declare const DEFAULTS: Readonly<Required<Omit<ConnectOptions, "url" | "clientId" | "csrfToken" | "ticket">>> &
  Readonly<Pick<ConnectOptions, "url" | "clientId" | "csrfToken" | "ticket">>;

export type State = "idle" | "connecting" | "open" | "reconnecting" | "closed";
export type Transport = "websocket" | "sse";

/** What "state" handlers get: on every change of state or transport, and on every retry
 *  scheduled (state "reconnecting", with its attempt and delay). */
export interface StateChange {
  state: State;
  previous: State;
  transport: Transport | null;
  /** The backoff exponent of this retry (0 for the first), or the failures before opening. */
  attempt?: number;
  /** Milliseconds until the retry (state "reconnecting"): the backoff's, or the delay a
   *  draining server gave (close code 1012; on SSE code 1012 with reason "restart"). */
  delay?: number;
  /** The close code: WebSocket's, 4000 (silent: no frame for twice the heartbeat),
   *  4001 (no welcome in time), or an HTTP status of a refused event stream. */
  code?: number;
  /** Why: "silent", "online", "visible", "revoked", "max_attempts", "closed", ... */
  reason?: string;
  connectionId?: string;
  /** On SSE with no subscription: nothing to receive, publishing works. */
  idle?: boolean;
}

export interface Attempt {
  attempt: number;
  transport: Transport;
  /** "initial", "retry", "online", "visible", "manual", "silent", ... */
  reason: string;
}

/** An event of a stream, stored (with a seq) or ephemeral (without). */
export interface RealtimeEvent<T = unknown> {
  stream: string;
  /** The event's seq; absent on ephemeral events. */
  seq?: number;
  event: string;
  data: T;
  /** When it was published: ISO 8601, UTC, milliseconds. */
  ts: string;
  ephemeral?: true;
}

export interface SubscribedInfo {
  stream: string;
  epoch: string;
  /** The stream's head when the subscription (re)started. */
  head: number;
  /** false: the position could not be continued; what follows is the stream's retained
   *  history from its start. Drop state built from this stream (see "realtime.reset"). */
  recovered: boolean;
}

export interface SnapshotInfo<T = unknown> {
  stream: string;
  seq: number;
  data: T;
}

export interface GapInfo {
  stream: string;
  expected: number;
  got: number;
}

export interface PublishResult {
  stream: string;
  /** The stored event's seq; null for an ephemeral event. */
  seq: number | null;
  /** true: the idempotency key was seen before: the first publish was stored, not this. */
  duplicate: boolean;
}

export interface PublishOptions {
  /** Deliver to live subscribers only: no seq, not stored, not queued while disconnected. */
  ephemeral?: boolean;
  /** Idempotency key (1-64 of A-Z a-z 0-9 _ . : -). Default: a random one per publish. */
  key?: string;
}

export interface SubscribeOptions<T = unknown> {
  /** The last seq you have: 0 for all retained history; absent: live from now. */
  since?: number;
  /** The epoch `since` belongs to. */
  epoch?: string;
  /** Join the stream's presence with this metadata. */
  presence?: Record<string, unknown>;
  onEvent?: (event: RealtimeEvent<T>) => void;
  onSubscribed?: (info: SubscribedInfo) => void;
  /** The stream could not be recovered: drop what you built from it. */
  onReset?: (info: SubscribedInfo) => void;
  onSnapshot?: (snapshot: SnapshotInfo) => void;
  onError?: (error: RealtimeError) => void;
}

/** An error with a stable code: the protocol's (forbidden, invalid_event, ...) or the
 *  client's own (queue_full, disconnected, closed, max_attempts, unsupported, left). */
export declare class RealtimeError extends Error {
  readonly code: string;
  /** HTTP status, for errors of HTTP requests. */
  readonly status?: number;
  readonly stream?: string;
  constructor(code: string, message?: string, detail?: Record<string, unknown>);
}

type Unsubscribe = () => void;

declare class Emitter<Events extends Record<string, (...args: any[]) => void>> {
  on<K extends keyof Events & string>(type: K, handler: Events[K]): Unsubscribe;
  off<K extends keyof Events & string>(type: K, handler: Events[K]): void;
  once<K extends keyof Events & string>(type: K, handler: Events[K]): Unsubscribe;
}

export interface PresenceMeta {
  ref: string;
  meta: Record<string, unknown>;
}

export interface PresenceMember {
  /** The user's primary key, or "anon:<client id>". */
  key: string;
  /** One entry per joined connection (tab, device) of this member. */
  metas: PresenceMeta[];
}

export interface PresenceCount {
  members: number;
  connections: number;
}

type PresenceEvents = {
  join: (member: PresenceMember) => void;
  update: (member: PresenceMember, previous: PresenceMember) => void;
  leave: (member: PresenceMember) => void;
  /** A full member list arrived (on joining, and again after a reconnect). */
  sync: (members: Map<string, PresenceMember>) => void;
  count: (count: PresenceCount) => void;
  /** After any of the above. */
  change: (presence: Presence) => void;
};

export declare class Presence extends Emitter<PresenceEvents> {
  readonly subscription: Subscription;
  /** Member key -> member, as of the last presence frame. */
  readonly members: Map<string, PresenceMember>;
  /** On counts-only streams (PRESENCE_COUNTS_ONLY). */
  readonly count: PresenceCount | null;
  /** This connection's entry in its member's metas, once joined. */
  readonly ref: string | null;
  /** The metadata joined with (and rejoined with after a reconnect), or null. */
  readonly meta: Record<string, unknown> | null;
  readonly joined: boolean;
  /** Join, or replace this connection's metadata; resolves with its ref. */
  join(meta?: Record<string, unknown>): Promise<string | null>;
  update(meta: Record<string, unknown>): Promise<string | null>;
  leave(): Promise<unknown>;
  list(): PresenceMember[];
}

type SubscriptionEvents<T> = {
  "*": (event: RealtimeEvent<T>) => void;
  "realtime.subscribed": (info: SubscribedInfo) => void;
  "realtime.reset": (info: SubscribedInfo) => void;
  "realtime.snapshot": (snapshot: SnapshotInfo) => void;
  "realtime.gap": (gap: GapInfo) => void;
  "realtime.error": (error: RealtimeError) => void;
} & { [eventType: string]: (event: RealtimeEvent<T>) => void };

export declare class Subscription<T = unknown> extends Emitter<SubscriptionEvents<T>> {
  readonly client: RealtimeClient;
  readonly stream: string;
  /** "pending" until the first subscribed frame, then "active"; "closed" at the end. */
  readonly state: "pending" | "active" | "closed";
  readonly epoch: string | null;
  /** The last seq delivered (null: started live and nothing yet). */
  readonly seq: number | null;
  /** Of the last subscribed frame. */
  readonly recovered: boolean | null;
  /** Events dropped because they had been delivered already. */
  readonly duplicates: number;
  readonly presence: Presence;
  /** Resolves on the first subscribed frame; rejects if the subscription is refused. */
  readonly ready: Promise<SubscribedInfo>;
  /** Where this subscription is: `{since: seq, epoch}` resumes from here. */
  readonly position: { epoch: string | null; seq: number | null };
  publish(event: string, data?: unknown, options?: PublishOptions): Promise<PublishResult>;
  unsubscribe(): Promise<void>;
}

type ClientEvents = {
  state: (change: StateChange) => void;
  attempt: (attempt: Attempt) => void;
  /** Errors not tied to a request: rate_limited, revoked, fatal refusals. */
  error: (error: RealtimeError) => void;
};

export declare class RealtimeClient extends Emitter<ClientEvents> {
  constructor(options?: ConnectOptions);
  /** The options in force: every one set, but clientId, csrfToken and ticket may be undefined. */
  readonly options: Required<Omit<ConnectOptions, "clientId" | "csrfToken" | "ticket">> &
    Pick<ConnectOptions, "clientId" | "csrfToken" | "ticket">;
  readonly state: State;
  /** The transport while open, else null. */
  readonly transport: Transport | null;
  readonly connectionId: string | null;
  readonly clientId: string | null;
  /** Seconds between heartbeats, from the server's welcome. */
  readonly heartbeat: number | null;
  /** The largest frame the server accepts, in bytes (its welcome's `max_frame`): a larger
   *  publish is rejected with code "frame_too_large" without being sent. */
  readonly maxFrame: number | null;
  readonly subscriptions: Map<string, Subscription>;
  subscribe<T = unknown>(stream: string, options?: SubscribeOptions<T>): Subscription<T>;
  subscription(stream: string): Subscription | undefined;
  publish(stream: string, event: string, data?: unknown, options?: PublishOptions): Promise<PublishResult>;
  /** Retry now (e.g. a "Retry" button), or start again after close(). */
  reconnect(): void;
  /** Close for good: no more retries; queued publishes reject with "closed". */
  close(): void;
}

/** Open a client; it connects at once and reconnects until close(). */
export declare function connect(options?: ConnectOptions): RealtimeClient;

/** The delay before retry `attempt` (0 for the first): random in [0, min(cap, base·2^attempt)). */
export declare function backoffDelay(
  attempt: number,
  backoff: { base: number; cap: number },
  random?: () => number,
): number;

/** A resume cursor from [stream, epoch, seq] entries (docs/protocol.md#resume-cursors). */
export declare function encodeCursor(entries: Iterable<[string, string, number]>): string;
export declare function decodeCursor(cursor: string): Array<[string, string, number]>;

// --- Wire frames of protocol 1 ------------------------------------------------------------
// One interface per frame type, as realtime/protocol/schemas/ describes it (docs/protocol.md
// has the meaning of every field); tests/unit/test_dts.py checks these against those schemas.

/** A client frame's id, echoed in its reply. */
export type FrameId = string | number;

export type ErrorCode =
  | "malformed_json"
  | "invalid_frame"
  | "unknown_type"
  | "unsupported_frame"
  | "frame_too_large"
  | "invalid_stream"
  | "forbidden"
  | "invalid_event"
  | "already_subscribed"
  | "not_subscribed"
  | "too_many_subscriptions"
  | "invalid_cursor"
  | "presence_full"
  | "invalid_presence"
  | "too_deep"
  | "rate_limited"
  | "revoked"
  | "store_unavailable"
  | "internal_error";

export interface SubscribeFrame {
  type: "subscribe";
  id?: FrameId | null;
  stream: string;
  since?: number | null;
  epoch?: string | null;
  presence?: Record<string, unknown> | null;
}

export interface UnsubscribeFrame {
  type: "unsubscribe";
  id?: FrameId | null;
  stream: string;
}

export interface PublishFrame {
  type: "publish";
  id?: FrameId | null;
  stream: string;
  event: string;
  data?: unknown;
  ephemeral?: boolean;
  key?: string | null;
}

export interface PresenceFrame {
  type: "presence";
  id?: FrameId | null;
  stream: string;
  meta?: Record<string, unknown>;
  leave?: boolean;
}

export interface PingFrame {
  type: "ping";
  id?: FrameId | null;
}

export interface ReceivedFrame {
  type: "received";
  id?: FrameId | null;
  count: number;
}

export type ClientFrame =
  | SubscribeFrame
  | UnsubscribeFrame
  | PublishFrame
  | PresenceFrame
  | PingFrame
  | ReceivedFrame;

export interface WelcomeFrame {
  type: "welcome";
  connection_id: string;
  protocol: 1;
  heartbeat: number;
  window: { messages: number; bytes: number };
  batch: boolean;
  max_frame: number;
}

export interface SubscribedFrame {
  type: "subscribed";
  id: FrameId | null;
  stream: string;
  epoch: string;
  seq: number;
  recovered: boolean;
}

export interface EventFrame<T = unknown> {
  type: "event";
  stream: string;
  seq?: number;
  event: string;
  data: T;
  ts: string;
}

export interface UnsubscribedFrame {
  type: "unsubscribed";
  id: FrameId | null;
  stream: string;
  reason?: "revoked";
}

export interface AckFrame {
  type: "ack";
  id: FrameId | null;
  seq?: number | null;
  ref?: string;
  duplicate?: true;
}

export interface PongFrame {
  type: "pong";
  id?: FrameId | null;
}

export interface ErrorFrame {
  type: "error";
  id: FrameId | null;
  code: ErrorCode;
  message: string;
}

export interface SnapshotFrame<T = unknown> {
  type: "snapshot";
  stream: string;
  seq: number;
  data: T;
}

export interface GapFrame {
  type: "gap";
  stream: string;
  from: number;
  to: number;
}

export interface PresenceStateFrame {
  type: "presence.state";
  stream: string;
  ref: string;
  members: Record<string, { metas: PresenceMeta[] }>;
}

export interface PresenceJoinFrame {
  type: "presence.join";
  stream: string;
  key: string;
  metas: PresenceMeta[];
}

export interface PresenceUpdateFrame {
  type: "presence.update";
  stream: string;
  key: string;
  metas: PresenceMeta[];
}

export interface PresenceLeaveFrame {
  type: "presence.leave";
  stream: string;
  key: string;
}

export interface PresenceCountFrame {
  type: "presence.count";
  stream: string;
  members: number;
  connections: number;
}

export interface BatchFrame {
  type: "batch";
  frames: Array<Exclude<ServerFrame, BatchFrame>>;
}

export type ServerFrame =
  | WelcomeFrame
  | SubscribedFrame
  | EventFrame
  | UnsubscribedFrame
  | AckFrame
  | PongFrame
  | ErrorFrame
  | SnapshotFrame
  | GapFrame
  | PresenceStateFrame
  | PresenceJoinFrame
  | PresenceUpdateFrame
  | PresenceLeaveFrame
  | PresenceCountFrame
  | BatchFrame;
