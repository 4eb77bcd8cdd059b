// The live-connections list: refreshed in place when the servers report connections opened
// or closed (`connections.changed` on `realtime:admin:connections`, every STATS_INTERVAL).
//
// The page is fetched again (same URL: same filters, search and page) and its result list,
// pagination and filters are swapped in. Selection for the admin actions is handled here
// by delegation (Django's actions.js binds to the rows present at load): checked rows stay
// checked across refreshes.

import { config, showState, watch } from "./live.js";

const live = config();
const status = document.getElementById("rt-live-status");
const form = document.getElementById("changelist-form");
let busy = false;
let again = false;
let fresh = new Set(); // ids opened since the last refresh, highlighted when they appear
const closingIds = new Set(); // ids reported closed whose rows are still listed

function boxes() {
  return Array.from(form.querySelectorAll("input.action-select"));
}

function updateCounter() {
  const counter = form.querySelector("span.action-counter");
  const all = boxes();
  const selected = all.filter((box) => box.checked).length;
  if (counter) {
    const total = Number(counter.dataset.actionsIcnt || all.length);
    counter.textContent =
      typeof window.ngettext === "function"
        ? window.interpolate(
            window.ngettext("%(sel)s of %(cnt)s selected", "%(sel)s of %(cnt)s selected", selected),
            { sel: selected, cnt: total },
            true,
          )
        : `${selected} of ${total} selected`;
  }
  const toggle = document.getElementById("action-toggle");
  if (toggle) toggle.checked = all.length > 0 && selected === all.length;
  const question = form.querySelector("div.actions span.question");
  const across = form.querySelector("div.actions input.select-across");
  if (question && !(toggle && toggle.checked)) {
    question.classList.add("hidden");
    form.querySelector("div.actions span.clear")?.classList.add("hidden");
    if (across) across.value = 0;
  } else if (question && across && across.value !== "1") {
    question.classList.remove("hidden");
  }
}

function select(box, checked) {
  box.checked = checked;
  box.closest("tr")?.classList.toggle("selected", checked);
}

form.addEventListener("change", (event) => {
  const target = event.target;
  if (target.id === "action-toggle") {
    boxes().forEach((box) => select(box, target.checked));
  } else if (target.classList.contains("action-select")) {
    select(target, target.checked);
  } else {
    return;
  }
  updateCounter();
});

form.addEventListener("click", (event) => {
  const link = event.target.closest("div.actions span.question a, div.actions span.clear a");
  if (!link) return;
  event.preventDefault();
  const across = form.querySelector("div.actions input.select-across");
  const selectAll = link.closest("span.question") !== null;
  if (across) across.value = selectAll ? 1 : 0;
  form.querySelector("div.actions span.question")?.classList.toggle("hidden", selectAll);
  form.querySelector("div.actions span.clear")?.classList.toggle("hidden", !selectAll);
  if (!selectAll) {
    boxes().forEach((box) => select(box, false));
    updateCounter();
  }
});

function swapFilters(doc) {
  const nav = document.getElementById("changelist-filter");
  const next = doc.getElementById("changelist-filter");
  if (!nav || !next) return;
  const open = {};
  nav.querySelectorAll("details[data-filter-title]").forEach((d) => {
    open[d.dataset.filterTitle] = d.open;
  });
  nav.innerHTML = next.innerHTML;
  nav.querySelectorAll("details[data-filter-title]").forEach((d) => {
    if (d.dataset.filterTitle in open) d.open = open[d.dataset.filterTitle];
  });
}

// filters.js remembers which filters are folded; keep doing so for swapped-in ones.
document.getElementById("changelist-filter")?.addEventListener(
  "toggle",
  (event) => {
    const title = event.target.dataset?.filterTitle;
    if (!title) return;
    const state = JSON.parse(sessionStorage.getItem("django.admin.filtersState") || "{}");
    state[title] = event.target.open;
    sessionStorage.setItem("django.admin.filtersState", JSON.stringify(state));
  },
  true,
);

async function refresh() {
  if (busy) {
    again = true;
    return;
  }
  busy = true;
  const highlight = fresh;
  fresh = new Set();
  try {
    const response = await fetch(window.location.href, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { "X-Requested-With": "XMLHttpRequest" },
    });
    if (!response.ok) {
      showState(status, "reconnecting", `Refreshing the list failed (HTTP ${response.status}).`);
      return;
    }
    const doc = new DOMParser().parseFromString(await response.text(), "text/html");
    const next = doc.getElementById("changelist-form");
    if (!next) return;
    const checked = new Set(boxes().filter((b) => b.checked).map((b) => b.value));
    const action = form.querySelector("select[name=action]")?.value;
    form.innerHTML = next.innerHTML;
    const listed = new Set();
    boxes().forEach((box) => {
      listed.add(box.value);
      if (checked.has(box.value)) select(box, true);
      if (highlight.has(box.value)) box.closest("tr")?.classList.add("rt-new");
      if (closingIds.has(box.value)) box.closest("tr")?.classList.add("rt-closing");
    });
    closingIds.forEach((id) => listed.has(id) || closingIds.delete(id));
    const actionSelect = form.querySelector("select[name=action]");
    if (actionSelect && action) actionSelect.value = action;
    swapFilters(doc);
    updateCounter();
  } catch (error) {
    showState(status, "reconnecting", `Refreshing the list failed: ${error}`);
  } finally {
    busy = false;
    if (again) {
      again = false;
      refresh();
    }
  }
}

function closing(ids) {
  // A closed connection's row stays for PRESENCE_GRACE seconds (a reload may take its
  // place): show it as closing now, and look again once it must be gone.
  for (const id of ids) {
    closingIds.add(id);
    form.querySelector(`input.action-select[value="${CSS.escape(id)}"]`)
      ?.closest("tr")
      ?.classList.add("rt-closing");
  }
  window.setTimeout(refresh, (live.presence_grace + 1) * 1000);
}

if (live && form) {
  updateCounter();
  watch({
    path: live.ws_path,
    streams: [live.connections_stream],
    onState: (state, detail) => {
      showState(status, state, detail);
      if (state === "live") refresh(); // catch up on what happened while disconnected
    },
    onEvent: (frame) => {
      if (frame.event !== "connections.changed") return;
      const { opened = [], closed = [] } = frame.data || {};
      opened.forEach((id) => fresh.add(id));
      if (closed.length) closing(closed);
      refresh();
    },
  });
}
