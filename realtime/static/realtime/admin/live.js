// Follow some of the app's own streams from an admin page, over its WebSocket (protocol 1).
//
// The staff user's session cookie authenticates the connection; `realtime:admin:*` streams
// are staff-only. Live only (no `since`): these streams carry ephemeral events. The page is
// told about the connection's state (`connecting`, `live`, `reconnecting`, `unavailable`)
// and gets every event frame. Reconnects with backoff; nothing is written to the console.

const MAX_DELAY = 30_000;

export function config(id = "realtime-live") {
  const element = document.getElementById(id);
  return element ? JSON.parse(element.textContent) : null;
}

export function watch({ path, streams, onEvent, onState }) {
  let socket = null;
  let attempt = 0;
  let pinger = null;
  let received = 0; // frames received on this connection (flow control)
  let acknowledged = 0;
  let unavailable = false;

  const send = (frame) => {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(frame));
  };
  const acknowledge = () => {
    if (received !== acknowledged) {
      acknowledged = received;
      send({ type: "received", count: received });
    }
  };

  function connect() {
    const url = new URL(path, window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    onState("connecting");
    received = acknowledged = 0;
    socket = new WebSocket(url, ["realtime.v1"]);
    socket.addEventListener("message", (message) => {
      received += 1;
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch {
        return;
      }
      if (frame.type === "welcome") {
        attempt = 0;
        const every = Math.max(1, Number(frame.heartbeat) || 15) * 1000;
        pinger = window.setInterval(() => {
          send({ type: "ping" });
          acknowledge();
        }, every);
        streams.forEach((stream, index) => send({ type: "subscribe", id: index, stream }));
      } else if (frame.type === "subscribed") {
        onState("live");
      } else if (frame.type === "event") {
        onEvent(frame);
      } else if (frame.type === "error") {
        // forbidden: a custom POLICY that does not let staff read realtime:admin:* streams.
        unavailable = frame.code === "forbidden" || frame.code === "revoked";
        onState(unavailable ? "unavailable" : "live", frame.message);
      }
      if (received - acknowledged >= 50) acknowledge();
    });
    socket.addEventListener("close", (event) => {
      window.clearInterval(pinger);
      pinger = null;
      if (unavailable || event.code === 4401) {
        onState("unavailable", event.reason || "Access to live updates was withdrawn.");
        return;
      }
      attempt += 1;
      const delay = Math.min(MAX_DELAY, 500 * 2 ** Math.min(attempt, 6)) * (0.5 + Math.random() / 2);
      onState("reconnecting");
      window.setTimeout(connect, delay);
    });
  }

  connect();
  return { close: () => socket && socket.close(1000) };
}

// The "● Live" indicator shared by the admin pages.
export function showState(element, state, detail) {
  if (!element) return;
  const labels = {
    connecting: "Connecting…",
    live: "Live",
    reconnecting: "Reconnecting…",
    unavailable: "Live updates unavailable",
  };
  element.dataset.state = state;
  const label = element.querySelector(".rt-label");
  if (label) label.textContent = labels[state] || state;
  element.title = detail || "";
}
