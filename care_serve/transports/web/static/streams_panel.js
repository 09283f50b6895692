// The streams panel: each stream's live preview (its newest processed frame, the boxes and
// labels drawn by the server), its state, frame rates, dropped frames and lag; a form to add a
// stream and a button to remove one, both with the admin credential of the models panel.
//
// The preview polls GET /streams/{name}/frame.jpg with fetch (an <img src> cannot carry the
// API key header that preview.mjpeg would need) at about the stream's processed rate, at most
// MAX_PREVIEW_FPS; everything stops while the panel is off screen or the tab hidden.

import { addStream, listStreams, removeStream, streamFrame } from "./api.js";
import { hideError, showError } from "./feedback.js";
import { $, el } from "./dom.js";

const LIST_EVERY_MS = 1500;
const MAX_PREVIEW_FPS = 5;
const IDLE_PREVIEW_MS = 1000; // before the first frame, or while nothing is processed
const FINAL_STATES = ["ended", "stopped"]; // the newest frame no longer changes

const cards = new Map(); // stream name -> {card, preview, ...}
let listTimer = null;
let listing = false;
let onScreen = false;
// Who showed the panel's error: a failed listing ("list") goes with the next good one; a
// refused add or remove ("action") stays until the next add or remove.
let errorFrom = null;

const active = () => onScreen && document.visibilityState === "visible";
const adminToken = () => $("admin-token").value.trim();

function panelError(from, err) {
  errorFrom = from;
  showError("streams-error", err);
}

function clearPanelError(from) {
  if (from === "action" || errorFrom === "list") {
    errorFrom = null;
    hideError("streams-error");
  }
}

// ------------------------------------------------------------------ preview

/** Polls the newest processed frame of stream `name` into `img`; `note` says why there is none. */
class Preview {
  constructor(name, img, note) {
    this.name = name;
    this.img = img;
    this.note = note;
    this.intervalMs = IDLE_PREVIEW_MS;
    this.final = false; // an ended or stopped stream: its newest frame no longer changes
    this.done = false; // that frame is shown: no more polls
    this.generation = 0; // a tick of an earlier start() finds a newer generation and quits
    this.timer = null;
    this.controller = null;
    this.url = null;
    this.frames = 0;
    this.running = false;
  }

  /** Follow the stream's state and processed rate. */
  update(status) {
    const fps = Math.min(MAX_PREVIEW_FPS, status.fps_out || 0);
    this.intervalMs = fps > 0.2 ? 1000 / fps : IDLE_PREVIEW_MS;
    this.final = FINAL_STATES.includes(status.state);
    if (!this.final) this.done = false;
  }

  start() {
    if (this.running || (this.final && this.done)) return;
    this.running = true;
    const generation = ++this.generation;
    this.tick(generation);
  }

  stop() {
    this.running = false;
    this.generation += 1;
    clearTimeout(this.timer);
    this.timer = null;
    if (this.controller) this.controller.abort();
  }

  /** Stop for good and free the last frame. */
  dispose() {
    this.stop();
    if (this.url) URL.revokeObjectURL(this.url);
    this.url = null;
  }

  async tick(generation) {
    const started = performance.now();
    const last = this.final;
    this.controller = new AbortController();
    try {
      const blob = await streamFrame(this.name, this.controller.signal);
      if (generation !== this.generation) return;
      if (blob) {
        const url = URL.createObjectURL(blob);
        this.img.src = url;
        if (this.url) URL.revokeObjectURL(this.url);
        this.url = url;
        this.frames += 1;
        this.img.dataset.frames = String(this.frames); // tests watch this grow
        this.img.hidden = false;
        this.note.hidden = true;
      } else if (!this.url) {
        this.note.textContent = "No frame processed yet.";
        this.note.hidden = false;
      }
    } catch (err) {
      if (generation !== this.generation) return;
      this.note.textContent = `No preview: ${err.message}`;
      this.note.hidden = false;
    }
    if (last) {
      this.running = false;
      this.done = true;
      return;
    }
    const wait = Math.max(0, this.intervalMs - (performance.now() - started));
    this.timer = setTimeout(() => this.tick(generation), wait);
  }
}

// ------------------------------------------------------------------ cards

const number = (x, digits = 1) => Number(x || 0).toFixed(digits);

function facts(status) {
  const list = el("dl", "facts");
  const add = (key, term, value) => {
    const dd = el("dd", "", value);
    dd.dataset.fact = key;
    list.append(el("dt", "", term), dd);
  };
  add("source", "Source", status.source);
  add("target", "Runs", status.pipeline ? `pipeline ${status.pipeline}` : `model ${status.model}`);
  add(
    "fps",
    "Frames per second",
    `${number(status.fps_in)} in · ${number(status.fps_out)} processed (at most ${status.max_fps})`,
  );
  add(
    "dropped",
    "Dropped",
    `${status.frames_dropped} of ${status.frames_decoded}` +
      ` (${status.frames_skipped} skipped by the cap, ${status.frames_failed} failed)`,
  );
  add("lag", "Lag", status.lag_ms === null || status.lag_ms === undefined ? "–" : `${number(status.lag_ms, 0)} ms`);
  if (status.width) add("size", "Size", `${status.width} × ${status.height}`);
  if (status.reconnects) add("reconnects", "Reconnects", String(status.reconnects));
  for (const sink of status.sinks || []) {
    const state = sink.connected ? "connected" : "not connected";
    add("sink", `Sink ${sink.type}`, `${sink.url}: ${state}, ${sink.delivered} sent, ${sink.failed} failed`);
  }
  return list;
}

function newCard(status) {
  const name = status.name;
  const card = el("li", "model-card stream-card");
  card.dataset.stream = name;
  const head = el("div", "model-card-head");
  const badge = el("span", "badge");
  head.append(el("h3", "", name), badge);

  const view = el("div", "stream-view");
  const img = el("img", "stream-preview");
  img.alt = `Newest processed frame of ${name}, with the boxes and labels found`;
  img.hidden = true;
  const note = el("p", "stream-note hint", "Waiting for the first frame…");
  view.append(img, note);

  const details = el("div", "stream-details");
  const error = el("p", "model-error");
  error.hidden = true;
  const actions = el("div", "model-actions");
  const remove = el("button", "secondary", "Remove");
  remove.type = "button";
  remove.setAttribute("aria-label", `Remove stream ${name}`);
  remove.addEventListener("click", () => removeOne(name, remove));
  actions.append(remove);
  card.append(head, view, details, error, actions);
  const entry = { card, badge, details, error, preview: new Preview(name, img, note) };
  cards.set(name, entry);
  return entry;
}

function updateCard(entry, status) {
  entry.card.dataset.state = status.state;
  entry.badge.className = `badge state-${status.state}`;
  entry.badge.textContent = status.state.replace("_", " ");
  entry.details.replaceChildren(facts(status));
  entry.error.hidden = !status.error;
  entry.error.textContent = status.error || "";
  entry.preview.update(status);
  if (active()) entry.preview.start();
}

function render(streams) {
  const list = $("stream-list");
  const names = new Set(streams.map((s) => s.name));
  for (const [name, entry] of cards) {
    if (names.has(name)) continue;
    entry.preview.dispose(); // the stream is gone
    entry.card.remove();
    cards.delete(name);
  }
  const rows = streams.map((status) => {
    const entry = cards.get(status.name) || newCard(status);
    updateCard(entry, status);
    return entry.card;
  });
  // Keep the cards (and their images) in place; only add, drop or reorder.
  const empty = list.querySelector(".streams-empty");
  if (rows.length && empty) empty.remove();
  rows.forEach((card, i) => {
    if (list.children[i] !== card) list.insertBefore(card, list.children[i] || null);
  });
  if (!rows.length && !empty) {
    list.replaceChildren(el("li", "hint streams-empty", "No stream runs. Add one with the form."));
  }
}

// ------------------------------------------------------------------ listing

/** GET /streams and update the cards (also after the API key changes). */
export async function refreshStreams() {
  if (listing) return;
  listing = true;
  try {
    const streams = await listStreams();
    clearPanelError("list");
    render(streams);
    document.body.dataset.streams = "listed"; // tests wait for this
  } catch (err) {
    if (errorFrom !== "action") panelError("list", err);
    document.body.dataset.streams = "failed";
  } finally {
    listing = false;
  }
}

function schedule() {
  clearTimeout(listTimer);
  listTimer = null;
  if (!active()) return;
  listTimer = setTimeout(async () => {
    await refreshStreams();
    schedule();
  }, LIST_EVERY_MS);
}

/** Start or stop every poll as the panel comes on screen or goes. */
function onVisibility() {
  if (active()) {
    refreshStreams();
    schedule();
    for (const entry of cards.values()) entry.preview.start();
  } else {
    clearTimeout(listTimer);
    listTimer = null;
    for (const entry of cards.values()) entry.preview.stop();
  }
}

// ------------------------------------------------------------------ adding and removing

async function removeOne(name, button) {
  clearPanelError("action");
  button.disabled = true;
  $("streams-status").textContent = `Removing ${name}…`;
  try {
    const status = await removeStream(name, adminToken());
    $("streams-status").textContent =
      `${name} is removed; it processed ${status.frames_processed} frames.`;
  } catch (err) {
    $("streams-status").textContent = "";
    panelError("action", err);
    button.disabled = false;
  }
  await refreshStreams();
}

function formSpec() {
  const [kind, target] = $("stream-target").value.split("|");
  const spec = {
    name: $("stream-name").value.trim(),
    source: $("stream-source").value.trim(),
    max_fps: Number($("stream-fps").value || 5),
    loop: $("stream-loop").checked,
  };
  if (kind && target) spec[kind] = target;
  return spec;
}

async function submit(event) {
  event.preventDefault();
  clearPanelError("action");
  const spec = formSpec();
  const button = $("stream-add");
  button.disabled = true;
  $("streams-status").textContent = `Starting ${spec.name || "the stream"}…`;
  try {
    const status = await addStream(spec, adminToken());
    const target = status.pipeline ? `pipeline ${status.pipeline}` : `model ${status.model}`;
    $("streams-status").textContent = `${status.name} started: ${status.source} through ${target}.`;
    $("stream-name").value = "";
  } catch (err) {
    $("streams-status").textContent = "";
    panelError("action", err);
  } finally {
    button.disabled = false;
  }
  await refreshStreams();
}

/** Fill the form's choice of what runs on each frame: the pipelines, then serving models. */
export function setStreamTargets(pipelines, models) {
  const select = $("stream-target");
  const previous = select.value;
  select.replaceChildren();
  if (pipelines.length) {
    const group = document.createElement("optgroup");
    group.label = "Pipelines";
    for (const p of pipelines) {
      const option = new Option(`${p.name}${p.ready ? "" : " · not ready"}`, `pipeline|${p.name}`);
      option.disabled = !p.ready;
      group.append(option);
    }
    select.append(group);
  }
  const group = document.createElement("optgroup");
  group.label = "Models";
  for (const m of models) {
    const option = new Option(`${m.name} · ${m.task} · ${m.state}`, `model|${m.name}`);
    option.disabled = !m.loaded_version;
    group.append(option);
  }
  select.append(group);
  const usable = [...select.options].filter((o) => !o.disabled);
  if (usable.some((o) => o.value === previous)) select.value = previous;
  else if (usable.length) select.value = usable[0].value;
}

/** Wire the form and the polls; the list and previews run while the panel is on screen. */
export function setupStreams() {
  $("stream-form").addEventListener("submit", submit);
  document.addEventListener("visibilitychange", onVisibility);
  if ("IntersectionObserver" in window) {
    new IntersectionObserver((entries) => {
      onScreen = entries[entries.length - 1].isIntersecting;
      onVisibility();
    }).observe($("streams"));
  } else {
    onScreen = true;
  }
  refreshStreams(); // once, even off screen: the list is there when scrolled to
  onVisibility();
}
