// The collector's live page. Plain JavaScript, no dependencies, nothing fetched from elsewhere.
// It polls /api/runs about once a second and fetches /api/runs/<id> for each open run whose
// version changed. Every value from the events is inserted as text, never as HTML.
"use strict";

const POLL_MS = 1000;
const OPEN_BY_DEFAULT = 8; // the newest runs show their timeline without a click
const PLAIN_KEY = /^[A-Za-z_@][A-Za-z0-9_@-]*$/;

const page = {
  overview: null,
  details: new Map(), // run id -> the last /api/runs/<id> answer
  cards: new Map(), // run id -> its <details> element
  opened: new Map(), // run id -> open or closed by the reader (true/false)
  pinned: new Map(), // run id -> the event id clicked in it
  rejections: new Map(), // rejection number -> its element
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function seconds(value) {
  if (value === null || value === undefined) return "–";
  if (value < 60) return `${value.toFixed(value < 10 ? 1 : 0)} s`;
  if (value < 3600) {
    const minutes = Math.floor(value / 60);
    return `${minutes} min ${String(Math.round(value % 60)).padStart(2, "0")} s`;
  }
  const hours = Math.floor(value / 3600);
  return `${hours} h ${String(Math.round((value % 3600) / 60)).padStart(2, "0")} min`;
}

function clock(iso) {
  const date = new Date(iso);
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

function preciseClock(iso) {
  // Windows can be shorter than a second: show milliseconds (the wire's precision).
  return `${clock(iso)}.${iso.slice(20, 23)}`;
}

function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

function childPath(path, key) {
  // The same JSON paths as the validator's errors: $.data[0].actor, $["odd key"].
  return PLAIN_KEY.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`;
}

// ---------------------------------------------------------------- polling

async function getJson(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

async function poll() {
  try {
    const overview = await getJson("/api/runs");
    page.overview = overview;
    setLive(true, overview.now);
    renderOverview(overview);
    await refreshDetails(overview);
  } catch (error) {
    setLive(false);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

async function refreshDetails(overview) {
  for (const run of overview.runs) {
    const card = page.cards.get(run.runId);
    if (!card || !card.open) continue;
    const known = page.details.get(run.runId);
    if (known && known.version === run.version) continue;
    try {
      const detail = await getJson(`/api/runs/${encodeURIComponent(run.runId)}`);
      page.details.set(run.runId, detail);
      renderTimeline(card, detail);
    } catch (error) {
      // The run may have been reset away meanwhile; the next poll tells.
    }
  }
}

function setLive(ok, now) {
  const live = document.getElementById("live");
  live.dataset.state = ok ? "live" : "down";
  live.textContent = ok ? `live · ${clock(now)}` : "collector not answering · retrying";
}

// ---------------------------------------------------------------- overview

function renderOverview(overview) {
  const endpoint = `${location.origin}${overview.eventsPath}`;
  document.getElementById("endpoint").textContent = endpoint;
  document.getElementById("empty-endpoint").textContent = endpoint;
  document.getElementById("pii").hidden = overview.showPii;
  renderCounts(overview);
  document.getElementById("run-count").textContent = overview.runs.length ? `(${overview.runs.length})` : "";
  document.getElementById("empty").hidden = overview.runs.length > 0;

  const list = document.getElementById("runs");
  const seen = new Set();
  overview.runs.forEach((run, index) => {
    seen.add(run.runId);
    let card = page.cards.get(run.runId);
    if (!card) {
      card = makeCard(run, index < OPEN_BY_DEFAULT);
      page.cards.set(run.runId, card);
    }
    renderSummary(card, run);
    if (list.children[index] !== card) list.insertBefore(card, list.children[index] || null);
  });
  for (const [runId, card] of page.cards) {
    if (!seen.has(runId)) {
      card.remove();
      page.cards.delete(runId);
      page.details.delete(runId);
    }
  }
  renderRejections(overview.rejections, overview.rejected);
}

function renderCounts(overview) {
  const counts = document.getElementById("counts");
  counts.replaceChildren();
  const parts = [
    [overview.events, "event", false],
    [overview.duplicates, "re-send", false],
    [overview.conflicts, "conflict", overview.conflicts > 0],
    [overview.rejected, "rejected", overview.rejected > 0],
  ];
  parts.forEach(([count, noun, bad], index) => {
    if (index) counts.append(" · ");
    const item = el("span", bad ? "bad" : "");
    item.append(el("b", "", count), ` ${noun === "rejected" ? noun : plural(count, noun).replace(/^\d+ /, "")}`);
    counts.append(item);
  });
}

function makeCard(run, open) {
  const card = el("details", "run");
  card.dataset.runId = run.runId;
  card.open = open;
  const summary = el("summary");
  const body = el("div", "body");
  body.append(el("div", "timeline"), el("div", "axis"), el("ul", "flags"), makeEventPanel());
  card.append(summary, body);
  card.addEventListener("toggle", () => {
    page.opened.set(run.runId, card.open);
    if (card.open && page.overview) refreshDetails(page.overview);
  });
  return card;
}

function renderSummary(card, run) {
  const summary = card.querySelector("summary");
  const title = el("div", "run-title");
  const state = el("span", `state ${run.state}`, run.state);
  state.title = run.stateReason;
  const activity = run.activity || {};
  const what = [activity.app, activity.subject, activity.activity || activity.course || lastSegment(activity.id)]
    .filter((part) => part)
    .join(" · ");
  const runId = el("span", "runid");
  runId.append("run ", el("code", "", run.runId));
  title.append(state, el("span", "what", what || "activity"), runId);

  const student = run.student || {};
  const who = el("div", "who");
  who.append(`student ${student.id || "–"}`);
  if (student.name) who.append(` · ${student.name}`);
  if (student.email) who.append(` · ${student.email}`);
  if (activity.courseId) who.append(` · course ${activity.courseId}`);
  if (activity.id) who.append(` · activity ${activity.id}`);

  const figures = el("div", "figures");
  const figure = (label, value) => {
    const item = el("span");
    item.append(`${label} `, el("b", "", value));
    figures.append(item);
  };
  figure("active", seconds(run.activeSeconds));
  figure("inactive", seconds(run.inactiveSeconds));
  if (run.otherSeconds) figure("waste/unknown", seconds(run.otherSeconds));
  figure("windows", run.windows);
  if (run.xpEarned !== null) figure("XP", run.xpEarned);
  if (run.totalQuestions !== null) figure("questions", `${run.correctQuestions}/${run.totalQuestions}`);
  if (run.masteredUnits !== null) figure("mastered", run.masteredUnits);
  if (run.pctComplete !== null) figure("course", `${run.pctComplete} %`);
  if (run.duplicates) figure("re-sends", run.duplicates);
  if (run.conflicts) figure("conflicts", run.conflicts);
  figures.append(el("span", "why", run.state === "completed" ? `completed · last event ${clock(run.lastReceived)}` : run.stateReason));
  summary.replaceChildren(title, who, figures);
}

function lastSegment(iri) {
  if (!iri) return "";
  const parts = String(iri).split("/").filter((part) => part);
  return parts[parts.length - 1] || iri;
}

// ---------------------------------------------------------------- timeline

function renderTimeline(card, run) {
  const timeline = run.timeline;
  const bar = card.querySelector(".timeline");
  const overview = page.overview;
  let span = timeline.seconds;
  // A running run's axis reaches to now (at most two windows on), so the bar grows live.
  let pending = 0;
  if (run.state === "running" && overview) {
    const ahead = (Date.parse(overview.now) - Date.parse(timeline.end)) / 1000;
    const limit = 2 * (run.usualWindowSeconds || 1);
    pending = Math.max(0, Math.min(ahead, limit));
  }
  span = Math.max(span + pending, 0.001);
  const at = (offset) => `${(100 * offset) / span}%`;
  const pieces = [];
  for (const gap of timeline.gaps) {
    const node = el("div", "gap");
    node.style.left = at(gap.offset);
    node.style.width = at(gap.seconds);
    node.title = `gap of ${seconds(gap.seconds)} (${clock(gap.start)}–${clock(gap.end)}): not reported — the inactive cutoff, the machine asleep, or a crash`;
    pieces.push(node);
  }
  for (const window of timeline.windows) pieces.push(windowNode(card, run, window, at));
  if (pending > 0) {
    const node = el("div", "pending");
    node.style.left = at(timeline.seconds);
    node.style.width = at(pending);
    node.title = "the open window: the tracker sends it when it closes";
    pieces.push(node);
  }
  for (const completion of timeline.completions) {
    const node = el("div", `completion${completion.conflict ? " conflict" : ""}`);
    node.dataset.eventId = completion.id;
    node.style.left = at(completion.offset);
    node.title = `completed at ${clock(completion.at)} (received ${clock(completion.received)})`;
    hookEvent(card, run, node, completion.id, `completion at ${clock(completion.at)}`);
    pieces.push(node);
  }
  bar.replaceChildren(...pieces);
  bar.setAttribute("role", "img");
  bar.setAttribute(
    "aria-label",
    `${plural(timeline.windows.length, "window")} over ${seconds(timeline.seconds)}${timeline.completions.length ? ", completed" : ""}`,
  );

  const axis = card.querySelector(".axis");
  axis.replaceChildren(
    el("span", "", clock(timeline.start)),
    el("span", "", `← ${seconds(timeline.seconds)} →`),
    el("span", "", clock(timeline.end)),
  );
  renderFlags(card, run);
  const pinned = page.pinned.get(run.runId);
  if (pinned && run.events[pinned]) showEvent(card, run, pinned, null, true);
}

function windowNode(card, run, window, at) {
  const classes = ["win"];
  if (window.conflict) classes.push("conflict");
  if (window.overlaps) classes.push("overlaps");
  if (page.pinned.get(run.runId) === window.id) classes.push("pinned");
  const node = el("div", classes.join(" "));
  node.dataset.eventId = window.id;
  node.dataset.number = window.number;
  node.style.left = at(window.offset);
  node.style.width = at(window.seconds);
  const total = window.active + window.inactive + window.other || 1;
  for (const [kind, value] of [["active", window.active], ["inactive", window.inactive], ["other", window.other]]) {
    if (!value) continue;
    const part = el("div", `part ${kind}`);
    part.style.width = `${(100 * value) / total}%`;
    node.append(part);
  }
  const label = `window ${window.number}: ${preciseClock(window.start)}–${preciseClock(window.end)}, active ${window.active} s, inactive ${window.inactive} s`;
  node.title = `${label}${window.resends ? `, re-sent ${window.resends}×` : ""}${window.conflict ? ", CONFLICT: same id, different content" : ""}`;
  hookEvent(card, run, node, window.id, label);
  return node;
}

function hookEvent(card, run, node, eventId, label) {
  node.addEventListener("mouseenter", () => showEvent(card, page.details.get(run.runId) || run, eventId, label, false));
  node.addEventListener("click", (event) => {
    event.stopPropagation();
    const current = page.details.get(run.runId) || run;
    if (page.pinned.get(run.runId) === eventId) {
      page.pinned.delete(run.runId);
    } else {
      page.pinned.set(run.runId, eventId);
    }
    card.querySelectorAll(".win.pinned").forEach((win) => win.classList.remove("pinned"));
    if (page.pinned.get(run.runId) === eventId && node.classList.contains("win")) node.classList.add("pinned");
    showEvent(card, current, eventId, label, true);
  });
}

function renderFlags(card, run) {
  const flags = card.querySelector(".flags");
  const items = [];
  const timeline = run.timeline;
  const conflicts = timeline.windows.filter((w) => w.conflict).map((w) => w.number);
  if (conflicts.length) items.push(["bad", `⚠ the same event id arrived again with different content (window ${conflicts.join(", ")}): the client changed an event after sending it`]);
  if (timeline.completions.some((c) => c.conflict)) items.push(["bad", "⚠ the completion's id arrived again with different content"]);
  if (timeline.completions.length > 1) items.push(["bad", `⚠ ${timeline.completions.length} completions with different ids for one run`]);
  const overlaps = timeline.windows.filter((w) => w.overlaps).map((w) => w.number);
  if (overlaps.length) items.push(["warn", `⚠ windows ${overlaps.join(", ")} overlap: that time is counted twice`]);
  const resends = timeline.windows.reduce((sum, w) => sum + w.resends, 0) + timeline.completions.reduce((sum, c) => sum + c.resends, 0);
  if (resends) items.push(["info", `↻ ${plural(resends, "re-send")} with the same content (normal after a timeout or a lost answer)`]);
  for (const gap of timeline.gaps) {
    items.push(["info", `⋯ gap of ${seconds(gap.seconds)} at ${clock(gap.start)}: not reported (inactive cutoff, sleep or a crash)`]);
  }
  flags.replaceChildren(...items.map(([kind, text]) => el("li", kind, text)));
}

function makeEventPanel() {
  const panel = el("div", "event");
  panel.append(el("div", "hint", "Hover over a window or the completion marker to see its event; click to keep it here."));
  return panel;
}

function showEvent(card, run, eventId, label, pinned) {
  if (!pinned && page.pinned.has(run.runId)) return; // a clicked event stays until unpinned
  const panel = card.querySelector(".event");
  const event = run.events ? run.events[eventId] : null;
  if (!event) return;
  const head = el("div", "event-head");
  head.append(el("b", "", event.type === "ActivityEvent" ? "ActivityEvent/Completed" : `${event.type}`), ` ${eventId}`);
  if (label) head.append(` · ${label}`);
  if (pinned && page.pinned.get(run.runId) === eventId) head.append(" · kept (click again to release)");
  const nodes = [head, el("pre", "", JSON.stringify(event, null, 2))];
  const others = (run.conflictingCopies || {})[eventId] || [];
  for (const other of others) {
    nodes.push(el("div", "event-head", "⚠ a later copy with the same id and different content:"));
    nodes.push(el("pre", "", JSON.stringify(other, null, 2)));
  }
  panel.replaceChildren(...nodes);
}

// ---------------------------------------------------------------- rejections

function renderRejections(rejections, total) {
  const section = document.getElementById("rejected-section");
  section.hidden = rejections.length === 0;
  document.getElementById("rejected-count").textContent = total ? `(${total}${total > rejections.length ? `, the last ${rejections.length} shown` : ""})` : "";
  const list = document.getElementById("rejected");
  const keep = new Set();
  rejections.forEach((rejection, index) => {
    keep.add(rejection.number);
    let node = page.rejections.get(rejection.number);
    if (!node) {
      node = rejectionNode(rejection);
      page.rejections.set(rejection.number, node);
    }
    if (list.children[index] !== node) list.insertBefore(node, list.children[index] || null);
  });
  for (const [number, node] of page.rejections) {
    if (!keep.has(number)) {
      node.remove();
      page.rejections.delete(number);
    }
  }
}

function rejectionNode(rejection) {
  const node = el("div", "rejection");
  node.dataset.number = rejection.number;
  const head = el("div", "head");
  head.append(
    el("span", "status", rejection.status === null ? "dropped" : `HTTP ${rejection.status}`),
    el("span", "", rejection.reason && rejection.problems.length ? rejection.reason.split(";")[0] : rejection.reason || "no answer"),
    el("span", "when", `${clock(rejection.received)} · ${plural(rejection.eventCount, "event")}`),
  );
  node.append(head);
  if (rejection.problems.length) {
    const problems = el("ul", "problems");
    for (const problem of rejection.problems) {
      const item = el("li");
      item.append(el("code", "path", problem.path), ` ${problem.rule}`);
      problems.append(item);
    }
    node.append(problems);
  }
  if (rejection.hasBody) {
    const button = el("button", "", "show the envelope");
    button.type = "button";
    button.addEventListener("click", async () => {
      const shown = node.querySelector(".json");
      if (shown) {
        shown.remove();
        button.textContent = "show the envelope";
        return;
      }
      try {
        const full = await getJson(`/api/rejections/${rejection.number}`);
        node.append(jsonTree(full.body, full.problems));
        button.textContent = "hide the envelope";
      } catch (error) {
        button.textContent = "no longer kept";
      }
    });
    node.append(button);
  }
  return node;
}

function jsonTree(value, problems) {
  // Pretty JSON whose lines at a problem's path are highlighted, with the rule beside them.
  const notes = new Map();
  const paths = new Set();
  (function collect(node, path) {
    paths.add(path);
    if (Array.isArray(node)) node.forEach((item, index) => collect(item, `${path}[${index}]`));
    else if (node && typeof node === "object") Object.keys(node).forEach((key) => collect(node[key], childPath(path, key)));
  })(value, "$");
  for (const problem of problems) {
    let path = problem.path;
    let note = problem.rule;
    while (!paths.has(path) && path !== "$") {
      // A missing key ("is required"): note it at the nearest part that exists.
      const cut = Math.max(path.lastIndexOf("."), path.lastIndexOf("["));
      note = `${path.slice(cut)} ${problem.rule}`.replace(/^\./, "");
      path = cut > 0 ? path.slice(0, cut) : "$";
    }
    notes.set(path, [...(notes.get(path) || []), note]);
  }
  const pre = el("pre", "json");
  (function render(node, path, indent, key, last) {
    const line = el("span", notes.has(path) ? "bad" : "");
    const pad = "  ".repeat(indent);
    const name = key === null ? "" : `${JSON.stringify(key)}: `;
    const comma = last ? "" : ",";
    const annotate = (target) => {
      for (const note of notes.get(path) || []) {
        const mark = el("span", "note", "  ← ");
        mark.append(el("code", "", path), ` ${note}`);
        target.append(mark);
      }
    };
    if (node && typeof node === "object") {
      const entries = Array.isArray(node) ? node.map((item, index) => [index, item]) : Object.entries(node);
      const [open, close] = Array.isArray(node) ? ["[", "]"] : ["{", "}"];
      line.append(`${pad}${name}${open}`);
      annotate(line);
      pre.append(line, "\n");
      entries.forEach(([childKey, child], index) => {
        const childPathText = Array.isArray(node) ? `${path}[${childKey}]` : childPath(path, childKey);
        render(child, childPathText, indent + 1, Array.isArray(node) ? null : childKey, index === entries.length - 1);
      });
      pre.append(`${pad}${close}${comma}\n`);
    } else {
      line.append(`${pad}${name}${JSON.stringify(node)}${comma}`);
      annotate(line);
      pre.append(line, "\n");
    }
  })(value, "$", 0, null, true);
  return pre;
}

poll();
