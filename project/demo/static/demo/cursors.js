// The live cursors demo: pointer positions as ephemeral events (not stored, no seq), names
// and colours from presence.
import { connect } from "realtime";
import { bindName, colorFor, renderPeople, showStatus, stream, tabId } from "./room.js";

const $ = (id) => document.getElementById(id);
const board = $("board");
const IDLE_MS = 15000;

const rt = connect();
const name = bindName($("name"), (value) => sub.presence.update({ name: value, tab: tabId }));
const color = () => colorFor(name()); // as in the who's-here list
showStatus(rt, $("status"), $("retry"));

const sub = rt.subscribe(stream, { presence: { name: name(), tab: tabId } });
sub.on("cursor.moved", ({ data }) => moveCursor(data));
sub.on("cursor.left", ({ data }) => removeCursor(data.tab));
sub.on("cursor.clicked", ({ data }) => ripple(data));
sub.presence.on("change", () => renderPeople($("people"), $("online-count"), sub.presence));
sub.presence.on("leave", (member) => {
  for (const meta of member.metas) removeCursor(meta.meta?.tab);
});

window.demo = { rt, sub }; // for the browser tests

const cursors = new Map(); // tab -> {element, timer}

function cursorElement(data) {
  const element = document.createElement("div");
  element.className = "cursor";
  element.dataset.tab = data.tab;
  element.innerHTML =
    '<svg viewBox="0 0 16 20" width="18" height="22" aria-hidden="true">' +
    '<path d="M1 1 L1 16 L5 12 L8 19 L11 18 L8 11 L14 11 Z" stroke="#fff" stroke-width="1.5" ' +
    'stroke-linejoin="round"/></svg><span class="cursor-label"></span>';
  board.append(element);
  return element;
}

function moveCursor(data) {
  if (!data || data.tab === tabId) return;
  let cursor = cursors.get(data.tab);
  if (!cursor) {
    cursor = { element: cursorElement(data), timer: 0 };
    cursors.set(data.tab, cursor);
  }
  const { element } = cursor;
  element.style.setProperty("--c", data.color || colorFor(data.tab));
  element.querySelector(".cursor-label").textContent = data.name || "Someone";
  element.style.left = `${(Math.min(1, Math.max(0, data.x)) * 100).toFixed(2)}%`;
  element.style.top = `${(Math.min(1, Math.max(0, data.y)) * 100).toFixed(2)}%`;
  clearTimeout(cursor.timer);
  cursor.timer = setTimeout(() => removeCursor(data.tab), IDLE_MS);
  board.classList.add("busy");
}

function removeCursor(tab) {
  const cursor = cursors.get(tab);
  if (!cursor) return;
  clearTimeout(cursor.timer);
  cursor.element.remove();
  cursors.delete(tab);
  board.classList.toggle("busy", cursors.size > 0);
}

function ripple(data) {
  const element = document.createElement("span");
  element.className = "ripple";
  element.style.left = `${data.x * 100}%`;
  element.style.top = `${data.y * 100}%`;
  element.style.borderColor = data.color || colorFor(data.tab);
  board.append(element);
  element.addEventListener("animationend", () => element.remove());
}

function position(event) {
  const box = board.getBoundingClientRect();
  return {
    x: Number(((event.clientX - box.left) / box.width).toFixed(4)),
    y: Number(((event.clientY - box.top) / box.height).toFixed(4)),
  };
}

// At most one position per interval (the server allows 50 frames a second; over the SSE
// fallback each one is an HTTP request, so fewer there); the latest one always goes out.
let lastSent = 0;
let latest = null;
let timer = 0;
function send() {
  timer = 0;
  if (!latest || rt.state !== "open") return;
  lastSent = performance.now();
  const data = { ...latest, tab: tabId, name: name(), color: color() };
  latest = null;
  sub.publish("cursor.moved", data, { ephemeral: true }).catch(() => {});
}

board.addEventListener("pointermove", (event) => {
  latest = position(event);
  const interval = rt.transport === "sse" ? 200 : 50;
  const wait = interval - (performance.now() - lastSent);
  if (wait <= 0) send();
  else if (!timer) timer = setTimeout(send, wait);
});

board.addEventListener("pointerleave", () => {
  latest = null;
  if (rt.state === "open") {
    sub.publish("cursor.left", { tab: tabId }, { ephemeral: true }).catch(() => {});
  }
});

board.addEventListener("pointerdown", (event) => {
  const data = { ...position(event), tab: tabId, color: color() };
  ripple(data);
  if (rt.state === "open") sub.publish("cursor.clicked", data, { ephemeral: true }).catch(() => {});
});
