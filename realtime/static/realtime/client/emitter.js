// Emitter: on/off/once for the client, its subscriptions and their presence; and deferred(),
// the promise-with-handles the request/reply bookkeeping uses.

/**
 * on/off/once; a handler that throws is reported without stopping the others.
 * @template {Record<string, (...args: any[]) => void>} [Events=Record<string, (...args: any[]) => void>]
 */
export class Emitter {
  /** @type {Map<string, Set<Function>>} */
  #handlers = new Map();

  /**
   * @template {keyof Events & string} K
   * @param {K} type
   * @param {Events[K]} handler
   * @returns {() => void} a function that removes the handler
   */
  on(type, handler) {
    let handlers = this.#handlers.get(type);
    if (!handlers) this.#handlers.set(type, (handlers = new Set()));
    handlers.add(handler);
    return () => this.off(type, handler);
  }

  /**
   * @template {keyof Events & string} K
   * @param {K} type
   * @param {Events[K]} handler
   */
  off(type, handler) {
    this.#handlers.get(type)?.delete(handler);
  }

  /**
   * @template {keyof Events & string} K
   * @param {K} type
   * @param {Events[K]} handler
   * @returns {() => void}
   */
  once(type, handler) {
    const off = this.on(type, /** @type {Events[K]} */ ((...args) => {
      off();
      handler(...args);
    }));
    return off;
  }

  /**
   * Call the handlers of `type`; for the class itself and its owner, not the application.
   * @param {string} type
   * @param {...any} args
   */
  _emit(type, ...args) {
    for (const handler of [...(this.#handlers.get(type) || [])]) {
      try {
        handler(...args);
      } catch (error) {
        queueMicrotask(() => {
          throw error; // the application's bug: show it, but keep the client going
        });
      }
    }
  }
}

/**
 * @template T
 * @typedef {{promise: Promise<T>, resolve: (value: T) => void, reject: (error: Error) => void}} Deferred
 */

/**
 * A deferred promise whose rejection is not reported as unhandled if nobody awaits it.
 * @template [T=void]
 * @returns {Deferred<T>}
 */
export function deferred() {
  /** @type {(value: T) => void} */
  let resolve = () => {};
  /** @type {(error: Error) => void} */
  let reject = () => {};
  const promise = new Promise((yes, no) => {
    resolve = yes;
    reject = no;
  });
  promise.catch(() => {});
  return { promise, resolve, reject };
}
