// The page: what the client reads from it (the tag's configuration, cookies, the client id in
// localStorage) and the signals it listens to (online, visibility). Each access is guarded, so
// the modules also load where there is no page (the unit tests run them in Node).

import { randomId } from "./encoding.js";

const CONFIG_ELEMENT_ID = "realtime-config";
const CLIENT_ID_KEY = "realtime:client-id";

/** The configuration `{% realtime_client %}` put on the page, or {}. */
export function pageConfig() {
  const element = typeof document !== "undefined" && document.getElementById(CONFIG_ELEMENT_ID);
  if (!element) return {};
  try {
    return JSON.parse(element.textContent || "") || {};
  } catch {
    return {};
  }
}

/** The page's origin, or "" where there is no page. */
export function pageOrigin() {
  return typeof location === "undefined" ? "" : location.origin;
}

/**
 * @param {string} name
 * @returns {string | null}
 */
export function readCookie(name) {
  const cookies = typeof document === "undefined" ? "" : document.cookie;
  for (const part of cookies ? cookies.split(";") : []) {
    const [key, ...value] = part.trim().split("=");
    if (key === name) return decodeURIComponent(value.join("="));
  }
  return null;
}

/** This browser's anonymous presence key, kept in localStorage (one per page if blocked). */
export function storedClientId() {
  try {
    let id = localStorage.getItem(CLIENT_ID_KEY);
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(id || "")) {
      id = randomId();
      localStorage.setItem(CLIENT_ID_KEY, id);
    }
    return id;
  } catch {
    return randomId(); // storage blocked: one member per page
  }
}

/** Whether the page is visible (true where there is no page). */
export function pageVisible() {
  return typeof document === "undefined" || document.visibilityState === "visible";
}

/**
 * Call `wake("online")` when the browser goes back online, `wake("visible")` when the page
 * becomes visible; returns the function that stops listening.
 * @param {(reason: "online" | "visible") => void} wake
 * @returns {() => void}
 */
export function watchPage(wake) {
  const onOnline = () => wake("online");
  const onVisibility = () => {
    if (pageVisible()) wake("visible");
  };
  if (typeof addEventListener === "function") addEventListener("online", onOnline);
  if (typeof document !== "undefined") document.addEventListener("visibilitychange", onVisibility);
  return () => {
    if (typeof removeEventListener === "function") removeEventListener("online", onOnline);
    if (typeof document !== "undefined") {
      document.removeEventListener("visibilitychange", onVisibility);
    }
  };
}
