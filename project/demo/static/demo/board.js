// The task board, live: speaks protocol 1 (docs/protocol.md) to /realtime/ws/ directly.
//
// The page came with the rows and the position of the "tasks" stream read before them, so we
// subscribe from that position: every later change arrives as an event. Events are applied
// as upserts (an event the rows already hold changes nothing). If the position cannot be
// recovered (history trimmed, stream reset), the server sends a snapshot of the rows instead.
const state = JSON.parse(document.getElementById("board-state").textContent);
const list = document.getElementById("tasks");
const empty = document.getElementById("empty");
const summary = document.getElementById("summary");
const statusEl = document.getElementById("status");
const form = document.getElementById("add-form");
const titleInput = document.getElementById("title");
const formError = document.getElementById("form-error");
const csrfToken = form.querySelector("[name=csrfmiddlewaretoken]").value;
const changeUrl = (id) => list.dataset.changeUrl.replace(/0\/$/, `${id}/`);

const tasks = new Map(state.tasks.map((task) => [task.id, task]));
const position = { epoch: state.epoch, seq: state.seq };
const flashing = new Set();
const pending = new Set();
let retries = 0;

function setStatus(text, kind) {
  statusEl.textContent = text;
  statusEl.className = `status status-${kind}`;
}

// --- rendering ----------------------------------------------------------------------------
function order(a, b) {
  return a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : a.id - b.id;
}

function row(task) {
  const item = document.createElement("li");
  item.className = "task";
  item.classList.toggle("done", task.done);
  item.classList.toggle("pending", pending.has(task.id));
  if (flashing.has(task.id)) item.classList.add("flash");
  item.dataset.id = task.id;
  const label = document.createElement("label");
  const box = document.createElement("input");
  box.type = "checkbox";
  box.checked = task.done;
  box.disabled = pending.has(task.id);
  box.addEventListener("change", () => send(task.id, "POST", { done: box.checked }));
  const title = document.createElement("span");
  title.className = "title";
  title.textContent = task.title;
  label.append(box, title);
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "delete";
  remove.textContent = "×";
  remove.title = "Delete";
  remove.setAttribute("aria-label", `Delete “${task.title}”`);
  remove.disabled = pending.has(task.id);
  remove.addEventListener("click", () => send(task.id, "DELETE"));
  item.append(label, remove);
  return item;
}

function render() {
  const sorted = [...tasks.values()].sort(order);
  list.replaceChildren(...sorted.map(row));
  flashing.clear();
  empty.hidden = sorted.length > 0;
  const done = sorted.filter((task) => task.done).length;
  summary.textContent = sorted.length ? `${sorted.length - done} open · ${done} done` : "";
}

// --- applying events ----------------------------------------------------------------------
function apply(event, data) {
  if (event === "task.created" || event === "task.updated") {
    tasks.set(data.id, data);
    flashing.add(data.id);
  } else if (event === "task.deleted") {
    tasks.delete(data.id);
  } else if (event === "task.batch") {
    for (const change of data.changes) apply(change.event, change.data);
  }
  pending.delete(data.id);
}

function onFrame(ws, frame) {
  switch (frame.type) {
    case "welcome": {
      ws.heartbeat = setInterval(() => ws.send('{"type":"ping"}'), frame.heartbeat * 1000);
      const subscribe = { type: "subscribe", id: "tasks", stream: state.stream, since: position.seq };
      if (position.epoch) subscribe.epoch = position.epoch;
      ws.send(JSON.stringify(subscribe));
      break;
    }
    case "subscribed":
      // recovered: false is followed by a snapshot (the model registers one): wait for it.
      position.epoch = frame.epoch;
      retries = 0;
      setStatus("live", "open");
      break;
    case "snapshot":
      tasks.clear();
      for (const task of frame.data.objects) tasks.set(task.id, task);
      position.seq = frame.seq;
      render();
      break;
    case "event":
      position.seq = frame.seq;
      apply(frame.event, frame.data);
      render();
      break;
    case "error":
      console.warn("realtime:", frame.code, frame.message);
      if (frame.id === "tasks") setStatus("no access", "closed");
      break;
  }
}

function connect() {
  setStatus(retries ? "reconnecting…" : "connecting…", retries ? "reconnecting" : "connecting");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/realtime/ws/`, ["realtime.v1"]);
  ws.onmessage = (message) => onFrame(ws, JSON.parse(message.data));
  ws.onclose = (close) => {
    clearInterval(ws.heartbeat);
    if (close.code === 4401) {
      setStatus("signed out", "closed");
      return;
    }
    retries += 1;
    setStatus("reconnecting…", "reconnecting");
    const delay = Math.random() * Math.min(30000, 500 * 2 ** retries);
    setTimeout(connect, delay);
  };
}

// --- changing tasks -----------------------------------------------------------------------
// The page does not change its own list: it waits for the event, like every other page.
function showError(message) {
  formError.textContent = message;
  formError.hidden = !message;
}

async function request(url, method, body) {
  const response = await fetch(url, {
    method,
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) {
    const answer = await response.json().catch(() => ({}));
    throw new Error(answer.error || `The server said ${response.status}.`);
  }
}

async function send(id, method, body) {
  pending.add(id);
  render();
  try {
    showError("");
    await request(changeUrl(id), method, body);
  } catch (error) {
    pending.delete(id);
    render();
    showError(error.message);
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = form.querySelector("button");
  button.disabled = true;
  try {
    showError("");
    await request(form.dataset.url, "POST", { title: titleInput.value });
    titleInput.value = "";
  } catch (error) {
    showError(error.message);
  } finally {
    button.disabled = false;
    titleInput.focus();
  }
});

render();
connect();
