// The upgrade: while on SSE, try WebSocket again now and then (upgrade.after, jittered,
// doubling per failure up to upgrade.cap). A try is a WebSocket "probe" opened beside the
// event stream; the connection adopts it when it is welcomed, and it fails on a close or
// when no welcome comes within connectTimeout.

/** @import { ReconnectPolicy } from "./policy.js" */
/** @import { Transport } from "./transport.js" */

/**
 * What the upgrade asks of the connection.
 * @typedef {object} UpgradeHost
 * @property {() => boolean} onSse whether the connection is open on SSE
 * @property {() => Promise<string | null>} ticket a connection ticket for the probe
 * @property {(ticket: string | null) => Transport} openWebSocket a probe reporting to the host
 * @property {(...args: any[]) => void} log
 */

export class Upgrade {
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #timer = undefined;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #probeTimer = undefined;
  /** @type {Transport | null} */
  #probe = null;

  /**
   * @param {UpgradeHost} host
   * @param {ReconnectPolicy} policy
   * @param {number} connectTimeout
   */
  constructor(host, policy, connectTimeout) {
    this.host = host;
    this.policy = policy;
    this.connectTimeout = connectTimeout;
  }

  /**
   * @param {Transport} transport
   * @returns {boolean} whether `transport` is the probe
   */
  isProbe(transport) {
    return transport === this.#probe;
  }

  /** On SSE: try WebSocket after the policy's delay (unless a try is planned or under way). */
  schedule() {
    if (!this.policy.upgrades || this.#timer || this.#probe) return;
    this.#timer = setTimeout(() => this.#try(), this.policy.upgradeDelay());
  }

  async #try() {
    this.#timer = undefined;
    if (!this.host.onSse()) return;
    let ticket = null;
    try {
      ticket = await this.host.ticket();
    } catch {
      // try without
    }
    if (!this.host.onSse()) return;
    this.host.log("trying WebSocket again");
    const probe = (this.#probe = this.host.openWebSocket(ticket));
    this.#probeTimer = setTimeout(() => {
      if (this.#probe === probe) {
        probe.close();
        this.failed();
      }
    }, this.connectTimeout);
  }

  /** The probe closed, or sent no welcome in time: try again later. */
  failed() {
    clearTimeout(this.#probeTimer);
    this.#probe = null;
    this.policy.upgradeFailed();
    if (this.host.onSse()) this.schedule();
  }

  /** The probe was welcomed: the connection takes it over. */
  adopted() {
    clearTimeout(this.#probeTimer);
    this.#probe = null;
  }

  /** The connection is gone: no try, and the probe closed. */
  stop() {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    clearTimeout(this.#probeTimer);
    this.#probe?.close();
    this.#probe = null;
  }
}
