// The chat demo: the whole page is a few calls of the realtime client (docs/client.md).
import { connect } from "realtime";
import { bindName, colorFor, renderPeople, showStatus, stream, tabId } from "./room.js";

const $ = (id) => document.getElementById(id);
const messages = $("messages");
const form = $("compose");
const input = $("text");
const errorBox = $("error");
const typingLine = $("typing");

const rt = connect();
const name = bindName($("name"), (value) => sub.presence.update({ name: value }));
showStatus(rt, $("status"), $("retry"));

const sub = rt.subscribe(stream, {
  since: 0, // all the history the server keeps, then live
  presence: { name: name() },
  onEvent: (event) => {
    if (event.event === "message.created") showMessage(event);
    else if (event.event === "typing") showTyping(event.data);
  },
  onReset: () => {
    // The stream's history could not be continued (reset, or trimmed while we were away):
    // what follows is the history from its start, so drop what we show.
    for (const item of messages.querySelectorAll("li:not(.pending)")) item.remove();
  },
  onError: (error) => showError(error.message),
});
const refresh = () => renderPeople($("people"), $("online-count"), sub.presence);
sub.presence.on("change", refresh);
rt.on("state", refresh);

// For the browser tests, and for poking at in the console.
window.demo = { rt, sub };

function timeOf(ts) {
  const date = ts ? new Date(ts) : new Date();
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function messageItem({ author, text, from, ts }) {
  const item = document.createElement("li");
  if (from && from === rt.clientId) item.classList.add("own");
  const dot = document.createElement("span");
  dot.className = "avatar";
  dot.style.background = colorFor(author || "?");
  dot.textContent = (author || "?").trim().charAt(0).toUpperCase();
  dot.setAttribute("aria-hidden", "true");
  const head = document.createElement("div");
  head.className = "meta";
  const who = document.createElement("span");
  who.className = "author";
  who.textContent = author || "Someone";
  const when = document.createElement("time");
  if (ts) when.dateTime = ts;
  when.textContent = timeOf(ts);
  head.append(who, when);
  const body = document.createElement("p");
  body.className = "text";
  body.textContent = text;
  const bubble = document.createElement("div");
  bubble.className = "bubble";
  bubble.append(head, body);
  item.append(dot, bubble);
  return item;
}

function stickToBottom(update) {
  const atBottom = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 40;
  update();
  if (atBottom) messages.scrollTop = messages.scrollHeight;
  $("empty").hidden = messages.children.length > 0;
}

function showMessage({ seq, data, ts }) {
  stickToBottom(() => {
    const item = messageItem({ ...data, ts });
    item.dataset.seq = String(seq);
    const pending = data.cid && messages.querySelector(`li.pending[data-cid="${CSS.escape(data.cid)}"]`);
    if (pending) pending.replaceWith(item);
    else {
      // Stored messages arrive in seq order; our own pending ones stay below them.
      const firstPending = messages.querySelector("li.pending");
      messages.insertBefore(item, firstPending);
    }
  });
}

const typists = new Map(); // name -> timer
function showTyping(data) {
  if (!data || data.tab === tabId || !data.name) return;
  clearTimeout(typists.get(data.name));
  typists.set(
    data.name,
    setTimeout(() => {
      typists.delete(data.name);
      renderTyping();
    }, 3000),
  );
  renderTyping();
}

function renderTyping() {
  const names = [...typists.keys()];
  typingLine.textContent = !names.length
    ? ""
    : names.length === 1
      ? `${names[0]} is typing…`
      : `${names.slice(0, -1).join(", ")} and ${names.at(-1)} are typing…`;
}

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = !message;
}

let lastTyping = 0;
input.addEventListener("input", () => {
  const now = Date.now();
  // Only over WebSocket: on the SSE fallback each one would be an HTTP request.
  if (!input.value || now - lastTyping < 2000 || rt.transport !== "websocket") return;
  lastTyping = now;
  sub.publish("typing", { name: name(), tab: tabId }, { ephemeral: true }).catch(() => {});
});

form.addEventListener("submit", async (submit) => {
  submit.preventDefault();
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  showError("");
  lastTyping = 0;
  const cid = `${tabId}-${Date.now().toString(36)}`;
  const data = { author: name(), text, from: rt.clientId, cid };
  const pending = messageItem(data);
  pending.classList.add("pending");
  pending.dataset.cid = cid;
  pending.querySelector("time").textContent = rt.state === "open" ? "sending…" : "queued";
  stickToBottom(() => messages.append(pending));
  try {
    // Queued while offline; re-sent after a reconnect with the same idempotency key.
    await sub.publish("message.created", data);
  } catch (error) {
    pending.classList.add("failed");
    pending.querySelector("time").textContent = "not sent";
    showError(`Not sent: ${error.message}`);
  }
});
