// Ticker: the heartbeat timer, run in a dedicated worker where it can be.
//
// Page timers in hidden tabs are throttled, down to once a minute in Chrome after five
// minutes: too slow for a 15 s heartbeat. A dedicated worker's timers are not, and each of
// its messages wakes the page. Where workers are unavailable (or a CSP forbids blob:
// workers) a plain interval does the job while the tab is visible.

const TICKER_SOURCE =
  "let t=0;onmessage=(e)=>{clearInterval(t);t=e.data>0?setInterval(()=>postMessage(0),e.data):0};";

export class Ticker {
  /**
   * @param {() => void} callback
   * @param {boolean} useWorker
   */
  constructor(callback, useWorker) {
    this.callback = callback;
    this.useWorker = useWorker && typeof Worker === "function";
    /** @type {"worker" | "timer" | null} what runs it, once started */
    this.kind = null;
    this.interval = 0;
    /** @type {Worker | null} */
    this._worker = null;
    /** @type {string | null} */
    this._url = null;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this._timer = undefined;
  }

  /** Call the callback every `ms` milliseconds from now on. */
  start(/** @type {number} */ ms) {
    this.stop();
    this.interval = ms;
    if (this.useWorker && !this._worker) {
      try {
        this._url = URL.createObjectURL(new Blob([TICKER_SOURCE], { type: "text/javascript" }));
        this._worker = new Worker(this._url);
        this._worker.onmessage = () => this.callback();
        this._worker.onerror = () => {
          this.useWorker = false;
          this._dropWorker();
          if (this.interval) this._useTimer(this.interval);
        };
      } catch {
        this.useWorker = false;
        this._dropWorker();
      }
    }
    if (this._worker) {
      this.kind = "worker";
      this._worker.postMessage(ms);
    } else {
      this._useTimer(ms);
    }
  }

  stop() {
    this.interval = 0;
    clearInterval(this._timer);
    this._worker?.postMessage(0);
  }

  /** Stop, and end the worker. */
  destroy() {
    this.stop();
    this._dropWorker();
  }

  /** @param {number} ms */
  _useTimer(ms) {
    this.kind = "timer";
    clearInterval(this._timer);
    this._timer = setInterval(this.callback, ms);
  }

  _dropWorker() {
    this._worker?.terminate();
    this._worker = null;
    if (this._url) URL.revokeObjectURL(this._url);
    this._url = null;
  }
}
