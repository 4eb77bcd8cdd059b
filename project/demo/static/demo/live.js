// The demo page's live view, speaking protocol 1 directly (see docs/protocol.md):
// subscribe with the last seq we hold, so a reconnect gets exactly what was missed.
const streamName = document.getElementById("stream-name").textContent;
const list = document.getElementById("events");
const empty = document.getElementById("empty");
const statusEl = document.getElementById("status");
const form = document.getElementById("publish-form");
const formError = document.getElementById("form-error");

let lastSeq = 0;
let epoch = null;
let retries = 0;

function setStatus(state) {
  statusEl.textContent = state;
  statusEl.className = `status status-${state}`;
}

function render(frame) {
  if (frame.seq <= lastSeq) return; // already shown
  lastSeq = frame.seq;
  const item = document.createElement("li");
  const seq = document.createElement("span");
  seq.className = "seq";
  seq.textContent = `#${frame.seq}`;
  const body = document.createElement("span");
  const author = document.createElement("span");
  author.className = "author";
  author.textContent = frame.data?.author || "anonymous";
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = frame.data?.text ?? JSON.stringify(frame.data);
  body.append(author, text);
  const time = document.createElement("time");
  time.dateTime = frame.ts;
  time.textContent = new Date(frame.ts).toLocaleTimeString();
  item.append(seq, body, time);
  list.append(item);
  empty.hidden = true;
  list.scrollTop = list.scrollHeight;
}

function connect() {
  setStatus(retries ? "reconnecting" : "connecting");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/realtime/ws/`);
  let heartbeat = null;
  ws.onmessage = (message) => {
    const frame = JSON.parse(message.data);
    if (frame.type === "welcome") {
      heartbeat = setInterval(() => ws.send('{"type":"ping"}'), frame.heartbeat * 1000);
      const subscribe = { type: "subscribe", id: 1, stream: streamName, since: lastSeq };
      if (epoch) subscribe.epoch = epoch;
      ws.send(JSON.stringify(subscribe));
    } else if (frame.type === "subscribed") {
      if (!frame.recovered) { list.replaceChildren(); lastSeq = 0; }
      epoch = frame.epoch;
      retries = 0;
      setStatus("open");
    } else if (frame.type === "event") {
      render(frame);
    } else if (frame.type === "error") {
      formError.textContent = frame.message;
      formError.hidden = false;
    }
  };
  ws.onclose = () => {
    clearInterval(heartbeat);
    setStatus("reconnecting");
    retries += 1;
    const delay = Math.random() * Math.min(30000, 500 * 2 ** retries);
    setTimeout(connect, delay);
  };
}

form.addEventListener("submit", async (submit) => {
  submit.preventDefault();
  const button = form.querySelector("button");
  button.disabled = true;
  formError.hidden = true;
  try {
    const response = await fetch(form.dataset.url, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        "X-CSRFToken": form.querySelector("[name=csrfmiddlewaretoken]").value,
      },
      body: JSON.stringify({
        stream: streamName,
        author: form.author.value,
        text: form.text.value,
      }),
    });
    if (!response.ok) throw new Error((await response.json()).error || response.statusText);
    form.text.value = "";
  } catch (error) {
    formError.textContent = error.message;
    formError.hidden = false;
  } finally {
    button.disabled = false;
    form.text.focus();
  }
});

connect();
