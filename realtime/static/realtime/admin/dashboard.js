// The realtime dashboard, kept current without reloading.
//
// Each server process publishes its figures (`server.stats`: Hub.describe()) to the
// staff-only stream realtime:admin:stats every STATS_INTERVAL seconds; this page merges
// them into the snapshot it was rendered with, and re-reads the database part (leases,
// busiest streams, presence, sweeper) from data/ every few seconds.

import { config, showState, watch } from "./live.js";

const live = config();
const root = document.getElementById("content-main");
const status = document.getElementById("rt-live-status");
let snapshot = JSON.parse(document.getElementById("rt-snapshot").textContent);

const $ = (id) => document.getElementById(id);
const number = (value, digits = 1) =>
  value === null || value === undefined ? "–" : Number(value).toFixed(digits);

function cell(text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text;
  return td;
}

function code(text) {
  const element = document.createElement("code");
  element.textContent = text;
  return element;
}

function latencyP99(stats) {
  const count = Number(stats.latency_count || 0);
  if (!count) return "–";
  let running = 0;
  const buckets = live.latency_buckets;
  for (let i = 0; i < buckets.length; i += 1) {
    running += (stats.latency_buckets || [])[i] || 0;
    if (running >= 0.99 * count) return `≤ ${buckets[i] * 1000} ms`;
  }
  return `> ${buckets[buckets.length - 1] * 1000} ms`;
}

function uptime(startedSeconds) {
  let seconds = Math.max(0, Date.now() / 1000 - startedSeconds);
  const units = [["day", 86400], ["hour", 3600], ["minute", 60]];
  for (const [name, size] of units) {
    if (seconds >= size) {
      const n = Math.floor(seconds / size);
      seconds -= n * size;
      return `${n} ${name}${n === 1 ? "" : "s"}`;
    }
  }
  return "under a minute";
}

// The same merge as realtime.admin.dashboard.server_entry: figures from the process itself.
function fromReply(base, reply) {
  const stats = reply.stats || {};
  const rates = reply.rates || {};
  const connections = {};
  for (const [transport, n] of Object.entries(stats.connections || {})) {
    if (n) connections[transport] = n;
  }
  return {
    ...(base || { expired: false }),
    id: reply.server,
    name: base ? base.name : `${reply.hostname}:${reply.pid}`,
    reporting: true,
    connections,
    subscriptions: stats.subscriptions ?? 0,
    events_per_second: rates.published_per_second ?? null,
    deliveries_per_second: rates.deliveries_per_second ?? null,
    latency_p99: latencyP99(stats),
    uptime: stats.started ? uptime(stats.started) : base?.uptime,
    alerts: reply.alerts || [],
  };
}

function totals(servers) {
  const t = {
    connections: 0,
    websocket: 0,
    sse: 0,
    subscriptions: 0,
    events_per_second: 0,
    deliveries_per_second: 0,
  };
  for (const s of servers) {
    for (const [transport, n] of Object.entries(s.connections)) {
      t[transport] = (t[transport] || 0) + n;
      t.connections += n;
    }
    t.subscriptions += s.subscriptions || 0;
    t.events_per_second += s.events_per_second || 0;
    t.deliveries_per_second += s.deliveries_per_second || 0;
  }
  return t;
}

function render() {
  const servers = snapshot.servers;
  const t = totals(servers);
  const alerts = servers.flatMap((s) => s.alerts.map((a) => ({ ...a, server_name: s.name })));
  const reporting = servers.filter((s) => s.reporting).length;
  const expected = servers.filter((s) => !s.expired).length;
  $("rt-reporting").textContent =
    `${reporting} of ${expected} server${expected === 1 ? "" : "s"} reporting`;
  $("rt-connections").textContent = t.connections;
  $("rt-transports").textContent = `${t.websocket} WebSocket · ${t.sse} SSE`;
  $("rt-subscriptions").textContent = t.subscriptions;
  const online = snapshot.users_online;
  $("rt-online").textContent = `${online} user${online === 1 ? "" : "s"} online`;
  // Events stored by anyone (servers, workers, commands), from the database over the last
  // minute; each server's own publish rate is live in the servers table.
  $("rt-events").textContent = number(snapshot.events.per_second);
  $("rt-deliveries").textContent = number(t.deliveries_per_second);
  $("rt-presence").textContent = snapshot.presence.members;
  const ps = snapshot.presence.streams;
  $("rt-presence-streams").textContent = `on ${ps} stream${ps === 1 ? "" : "s"}`;
  const sweeper = snapshot.sweeper;
  $("rt-alert-count").textContent = alerts.length;
  $("rt-sweeper").textContent = sweeper.expired_leases
    ? `${sweeper.expired_leases} expired lease${sweeper.expired_leases === 1 ? "" : "s"}, ` +
      `${Math.round(sweeper.lag_seconds)} s behind`
    : "sweeper on time";
  $("rt-alert-card").classList.toggle("rt-bad", alerts.length > 0 || sweeper.expired_leases > 0);

  const list = $("rt-alerts");
  list.replaceChildren();
  for (const alert of alerts) {
    const li = document.createElement("li");
    const name = document.createElement("strong");
    name.textContent = alert.name;
    li.append(name, `: ${+Number(alert.value).toFixed(2)} over ${alert.threshold} on ${alert.server_name}`);
    list.append(li);
  }
  if (!alerts.length) {
    const li = document.createElement("li");
    li.className = "rt-none";
    li.textContent = "None: every figure is under its threshold.";
    list.append(li);
  }

  const rows = servers.map((s) => {
    const tr = document.createElement("tr");
    if (!s.reporting) tr.className = "rt-stale";
    const name = cell("", "rt-server");
    name.append(code(s.name));
    if (s.expired) {
      const flag = document.createElement("strong");
      flag.className = "rt-expired";
      flag.textContent = "expired";
      name.append(" ", flag);
    } else if (!s.reporting) {
      name.append(" (not reporting)");
    }
    tr.append(
      name,
      cell(s.connections.websocket || 0, "rt-num"),
      cell(s.connections.sse || 0, "rt-num"),
      cell(s.subscriptions ?? "–", "rt-num rt-hide-narrow"),
      cell(number(s.events_per_second), "rt-num rt-hide-narrow"),
      cell(number(s.deliveries_per_second), "rt-num"),
      cell(s.latency_p99, "rt-num rt-hide-narrow"),
      cell(s.uptime || "–", "rt-hide-narrow"),
    );
    return tr;
  });
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = cell(
      "No server process holds a lease: none has had a connection yet, or none is running.",
      "rt-empty",
    );
    td.colSpan = 8;
    tr.append(td);
    rows.push(tr);
  }
  $("rt-servers").replaceChildren(...rows);

  const streams = snapshot.streams.map((st) => {
    const tr = document.createElement("tr");
    const name = cell("", "rt-stream");
    name.append(code(st.name));
    tr.append(
      name,
      cell(st.events, "rt-num rt-hide-narrow"),
      cell(number(st.events_per_second, 2), "rt-num"),
      cell(st.last_seq, "rt-num rt-hide-narrow"),
      cell(st.subscribers, "rt-num"),
    );
    return tr;
  });
  if (!streams.length) {
    const tr = document.createElement("tr");
    const td = cell("No event stored in that time.", "rt-empty");
    td.colSpan = 5;
    tr.append(td);
    streams.push(tr);
  }
  $("rt-streams").replaceChildren(...streams);
}

function onStats(reply) {
  const index = snapshot.servers.findIndex((s) => s.id === reply.server);
  const entry = fromReply(index >= 0 ? snapshot.servers[index] : null, reply);
  if (index >= 0) snapshot.servers[index] = entry;
  else snapshot.servers.push(entry);
  render();
}

async function reload() {
  try {
    const response = await fetch(root.dataset.dataUrl, {
      credentials: "same-origin",
      cache: "no-store",
    });
    if (response.ok) {
      snapshot = await response.json();
      render();
    }
  } catch {
    // The server is restarting or unreachable; the indicator shows the WebSocket's state.
  } finally {
    window.setTimeout(reload, live.data_interval * 1000);
  }
}

if (live && root) {
  render();
  window.setTimeout(reload, live.data_interval * 1000);
  watch({
    path: live.ws_path,
    streams: [live.stats_stream],
    onState: (state, detail) => showState(status, state, detail),
    onEvent: (frame) => {
      if (frame.event === "server.stats" && frame.data) onStats(frame.data);
    },
  });
}
