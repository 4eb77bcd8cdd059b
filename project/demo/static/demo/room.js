// What the chat and cursors demos share: the room's stream, your name, colours, the
// connection status pill and the who's-online list.
const NAME_KEY = "realtime-demo:name";
const PALETTE = ["#0c6b58", "#2563eb", "#c2410c", "#7c3aed", "#be185d", "#0e7490", "#4d7c0f", "#b45309"];

export const stream = JSON.parse(document.getElementById("room-stream").textContent);

/** A short random id for this tab (two tabs of one browser are one presence member). */
export const tabId = Math.random().toString(36).slice(2, 10);

export function colorFor(text) {
  let hash = 0;
  for (const char of String(text)) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  return PALETTE[hash % PALETTE.length];
}

/** Your name from localStorage (a guest name the first time), kept in sync with `input`. */
export function bindName(input, onChange) {
  let name = "";
  try {
    name = localStorage.getItem(NAME_KEY) || "";
  } catch {
    // storage blocked: a new guest each time
  }
  if (!name) name = `Guest ${Math.floor(1000 + Math.random() * 9000)}`;
  input.value = name;
  let timer = 0;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      const value = input.value.trim().slice(0, 40);
      if (!value || value === name) return;
      name = value;
      try {
        localStorage.setItem(NAME_KEY, name);
      } catch {
        // fine: this page still uses it
      }
      onChange(name);
    }, 400);
  });
  return () => name;
}

const TRANSPORTS = { websocket: "WebSocket", sse: "SSE fallback" };

/** Keep the status pill (and the retry button) in step with the client's state. */
export function showStatus(rt, pill, retry) {
  const render = ({ state, delay, reason }) => {
    let text = state;
    if (state === "open") text = `live · ${TRANSPORTS[rt.transport] || rt.transport}`;
    else if (state === "reconnecting") {
      text = delay >= 1000 ? `reconnecting in ${Math.round(delay / 1000)} s` : "reconnecting…";
    } else if (state === "connecting") text = "connecting…";
    else if (state === "closed") text = reason === "closed" ? "closed" : "offline";
    pill.textContent = text;
    pill.className = `status status-${state}`;
    pill.dataset.state = state;
    pill.dataset.transport = rt.transport || "";
    retry.hidden = !(state === "reconnecting" || state === "closed");
  };
  rt.on("state", render);
  render({ state: rt.state });
  retry.addEventListener("click", () => rt.reconnect());
}

/** The display name of a presence member: its newest connection's. */
export function memberName(member) {
  const metas = member.metas || [];
  return metas[metas.length - 1]?.meta?.name || "Someone";
}

/** Render the who's-online list; `mine` is this connection's presence ref. */
export function renderPeople(list, count, presence) {
  const members = presence.list().sort((a, b) => memberName(a).localeCompare(memberName(b)));
  count.textContent = String(members.length);
  list.replaceChildren(
    ...members.map((member) => {
      const item = document.createElement("li");
      item.dataset.key = member.key;
      const dot = document.createElement("span");
      dot.className = "dot";
      dot.style.background = colorFor(memberName(member));
      const name = document.createElement("span");
      name.className = "person-name";
      name.textContent = memberName(member);
      item.append(dot, name);
      if (member.metas.some((m) => m.ref === presence.ref)) {
        const you = document.createElement("span");
        you.className = "you";
        you.textContent = "you";
        item.append(you);
      }
      if (member.metas.length > 1) {
        const tabs = document.createElement("span");
        tabs.className = "tabs";
        tabs.textContent = `${member.metas.length} tabs`;
        item.append(tabs);
      }
      return item;
    }),
  );
}
