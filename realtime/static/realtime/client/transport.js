// The contract between a transport (one connection attempt over WebSocket or SSE) and the
// connection that owns it: types only, for the modules and the type checker.

/**
 * A frame as the server sends it (docs/protocol.md#frames): an object with a `type`.
 * @typedef {{type: string, [field: string]: any}} Frame
 */

/**
 * A frame as the client sends it: an object with a `type`.
 * @typedef {{type: string, [field: string]: unknown}} ClientFrame
 */

/**
 * How a transport ended. `opened`: it had delivered a welcome. `status` and `error`: the
 * HTTP status and error body of a refused event stream. `immediate`: retry without waiting.
 * `retryAfter`: milliseconds the server asked the client to wait before reconnecting (a
 * draining server's `retry:` field on SSE; on WebSocket it is in the 1012 close's reason).
 * @typedef {object} CloseInfo
 * @property {number} code
 * @property {string} reason
 * @property {boolean} opened
 * @property {number} [status]
 * @property {{code?: string, message?: string} | null} [error]
 * @property {boolean} [immediate]
 * @property {number} [retryAfter]
 */

/**
 * One connection attempt. It reports to its listener until it ends; close() ends it without
 * a report. send() returns false when the frame could not be sent (SSE never sends).
 * @typedef {object} Transport
 * @property {"websocket" | "sse"} kind
 * @property {boolean} welcomed
 * @property {(frame: ClientFrame) => boolean} send
 * @property {(code?: number, reason?: string) => void} close
 */

/**
 * What a transport reports to: any data arrived (activity), the welcome frame, every other
 * frame (`more`: others of the same batch follow at once), and its end (once).
 * @typedef {object} TransportListener
 * @property {(transport: Transport) => void} activity
 * @property {(transport: Transport, frame: Frame) => void} welcome
 * @property {(transport: Transport, frame: Frame, more?: boolean) => void} frame
 * @property {(transport: Transport, info: CloseInfo) => void} closed
 */

/**
 * Makes transports; the unit tests give the client fake ones.
 * @typedef {object} TransportFactory
 * @property {(url: string, protocols: string[], listener: TransportListener) => Transport} websocket
 * @property {(url: string, headers: Record<string, string>, listener: TransportListener) => Transport} sse
 */

export {};
