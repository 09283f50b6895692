// Drawing an answer: top-k bars, boxes with a client-side score filter, a coloured mask with
// its legend, a pipeline's boxes with each one's class, and the server's time per stage.

import { classColour, css, detectionColour, textOn } from "./palette.js";
import { $, el } from "./dom.js";


function swatch(colour) {
  const node = el("span", "swatch");
  node.setAttribute("aria-hidden", "true");
  if (colour) node.style.backgroundColor = css(colour);
  else node.classList.add("swatch-none");
  return node;
}

export const percent = (x, digits = 1) => `${(100 * x).toFixed(digits)} %`;

/** Hide every task's panel and overlay (before drawing a new answer). */
export function clearResult() {
  for (const id of [
    "classes-panel", "counts-panel", "legend-panel", "embedding-panel", "objects-panel", "boxes", "mask-canvas",
  ]) {
    $(id).hidden = true;
  }
  $("bars").replaceChildren();
  $("objects").replaceChildren();
  $("boxes").replaceChildren();
  $("counts").replaceChildren();
  $("legend").replaceChildren();
}

// ---------------------------------------------------------------- embedding

const norm = (v) => Math.sqrt(v.reduce((sum, x) => sum + x * x, 0));

/** Cosine similarity of two vectors of the same length. */
export function cosine(a, b) {
  const dot = a.reduce((sum, x, i) => sum + x * b[i], 0);
  return dot / Math.max(norm(a) * norm(b), 1e-12);
}

/** The vector's first values and its norm; with `previous`, the cosine similarity to it. */
export function renderEmbedding(answer, previous) {
  const shown = answer.embedding.slice(0, 8).map((x) => x.toFixed(4));
  $("embedding-values").textContent = `[${shown.join(", ")}${answer.dim > 8 ? ", …" : ""}]`;
  $("embedding-norm").textContent =
    `${answer.dim} values, norm ${norm(answer.embedding).toFixed(4)}` +
    (answer.normalized ? " (scaled to unit length)" : "");
  const compare = $("embedding-compare");
  if (previous && previous.vector.length === answer.embedding.length) {
    const similarity = cosine(previous.vector, answer.embedding);
    compare.dataset.cosine = String(similarity);
    compare.textContent =
      `Cosine similarity to the previous image (${previous.description}): ${similarity.toFixed(4)}`;
  } else {
    delete compare.dataset.cosine;
    compare.textContent = "Send a second image to compare the two (cosine similarity).";
  }
  $("embedding-panel").hidden = false;
  return `a vector of ${answer.dim} values`;
}

// ---------------------------------------------------------------- classification

export function renderClassification(answer) {
  const list = $("bars");
  for (const p of answer.predictions) {
    const item = el("li", "bar");
    item.dataset.label = p.label;
    item.dataset.probability = String(p.probability);
    const fill = el("span", "bar-fill");
    fill.style.width = `${Math.max(0, Math.min(1, p.probability)) * 100}%`;
    const track = el("span", "bar-track");
    track.setAttribute("aria-hidden", "true");
    track.append(fill);
    item.append(el("span", "bar-label", p.label), track, el("span", "bar-value", percent(p.probability)));
    list.append(item);
  }
  $("classes-panel").hidden = false;
  const top = answer.predictions[0];
  return top ? `${top.label} (${percent(top.probability)})` : "no class";
}

// ---------------------------------------------------------------- detection

/** A box over the stage at `box` (pixels of a w × h image), tagged `text` in `colour`. */
function boxElement(box, w, h, colour, text) {
  const [x1, y1, x2, y2] = box.map((v, i) => Math.max(0, Math.min(i % 2 ? h : w, v)));
  const node = el("div", "det-box");
  node.style.left = `${(100 * x1) / w}%`;
  node.style.top = `${(100 * y1) / h}%`;
  node.style.width = `${(100 * (x2 - x1)) / w}%`;
  node.style.height = `${(100 * (y2 - y1)) / h}%`;
  node.style.borderColor = css(colour);
  const tag = el("span", "det-tag", text);
  tag.style.backgroundColor = css(colour);
  tag.style.color = textOn(colour);
  if (y1 / h < 0.08) tag.classList.add("inside");
  node.append(tag);
  return node;
}

export function renderDetection(answer, threshold) {
  const layer = $("boxes");
  const { image_width: w, image_height: h } = answer;
  // Lowest score first, so the best boxes and their tags are drawn on top.
  for (const d of [...answer.detections].reverse()) {
    const box = boxElement(d.box, w, h, detectionColour(d.class_id), `${d.label} ${d.score.toFixed(2)}`);
    box.dataset.label = d.label;
    box.dataset.score = String(d.score);
    layer.append(box);
  }
  layer.hidden = false;
  $("counts-panel").hidden = false;
  return filterDetections(answer, threshold);
}

/** Show only the boxes scoring at least `threshold`; update the count per class. */
export function filterDetections(answer, threshold) {
  const counts = new Map();
  let shown = 0;
  for (const box of $("boxes").children) {
    const visible = Number(box.dataset.score) >= threshold;
    box.hidden = !visible;
    if (visible) {
      shown += 1;
      counts.set(box.dataset.label, (counts.get(box.dataset.label) || 0) + 1);
    }
  }
  const byId = new Map(answer.detections.map((d) => [d.label, d.class_id]));
  const list = $("counts");
  list.replaceChildren();
  const rows = [...counts.entries()].sort((a, b) => b[1] - a[1] || byId.get(a[0]) - byId.get(b[0]));
  for (const [label, n] of rows) {
    const item = el("li");
    item.dataset.label = label;
    item.dataset.count = String(n);
    item.append(swatch(detectionColour(byId.get(label))), el("span", "legend-label", label), el("span", "legend-value", String(n)));
    list.append(item);
  }
  const total = answer.detections.length;
  $("counts-summary").textContent =
    `${shown} of ${total} box${total === 1 ? "" : "es"} with a score of at least ${threshold.toFixed(2)}`;
  return `${shown} box${shown === 1 ? "" : "es"}`;
}

// ---------------------------------------------------------------- pipeline

/** Names the classifier does not know (or all, without its labels): a colour each, in the
 * order first seen, after the classifier's own. */
const otherLabels = new Map();

/** Class `label` of `labels` (the classifier's) in the colour of its index, as detections are. */
function labelColour(label, labels) {
  const index = labels.indexOf(label);
  if (index >= 0) return detectionColour(index);
  if (!otherLabels.has(label)) otherLabels.set(label, otherLabels.size);
  return detectionColour(labels.length + otherLabels.get(label));
}

/** Each box tagged with the classifier's label and score (the detector's when not classified);
 * `labels` are the classifier's class names, for the colours. */
export function renderPipeline(answer, labels = []) {
  const layer = $("boxes");
  const list = $("objects");
  const { image_width: w, image_height: h } = answer;
  const named = answer.detections.map((d) => {
    const top = d.classification && d.classification.predictions[0];
    return { d, label: top ? top.label : d.label, score: top ? top.score : d.score, top };
  });
  for (const { d, label, score, top } of [...named].reverse()) {
    const unsure = d.classification && d.classification.uncertain ? " ?" : "";
    const box = boxElement(d.box, w, h, labelColour(label, labels), `${label} ${score.toFixed(2)}${unsure}`);
    box.dataset.label = label;
    box.dataset.score = String(score);
    box.dataset.detected = d.label;
    box.dataset.classified = top ? "yes" : "no";
    box.title = `detector: ${d.label} ${d.score.toFixed(2)}` + (top ? ` · classifier: ${label} ${score.toFixed(2)}` : "");
    layer.append(box);
  }
  for (const { d, label, score, top } of named) {
    const item = el("li");
    item.dataset.label = label;
    item.dataset.score = String(score);
    const said = top
      ? `${percent(score)}${d.classification.uncertain ? " (unsure)" : ""}`
      : "not classified";
    item.append(
      swatch(labelColour(label, labels)),
      el("span", "legend-label", label),
      el("span", "legend-value", said),
      el("span", "object-detail", `detector: ${d.label} ${d.score.toFixed(2)}`),
    );
    list.append(item);
  }
  layer.hidden = false;
  $("objects-panel").hidden = false;
  const n = answer.detections.length;
  $("objects-summary").textContent = n
    ? `${n} object${n === 1 ? "" : "s"}, highest detection score first: the classifier's class of each`
    : "The detector found no object.";
  const found = named.map((x) => x.label);
  return n ? `${n} object${n === 1 ? "" : "s"}: ${found.join(", ")}` : "no object";
}

// ---------------------------------------------------------------- segmentation

async function decodeMask(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const bitmap = await createImageBitmap(new Blob([bytes], { type: "image/png" }), {
    colorSpaceConversion: "none",
    premultiplyAlpha: "none",
  });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  return context.getImageData(0, 0, bitmap.width, bitmap.height);
}

export async function renderSegmentation(answer, opacity) {
  const mask = await decodeMask(answer.mask_png);
  const canvas = $("mask-canvas");
  canvas.width = mask.width;
  canvas.height = mask.height;
  const context = canvas.getContext("2d");
  const out = context.createImageData(mask.width, mask.height);
  const colours = answer.class_names.map((_, c) => classColour(c));
  for (let i = 0; i < mask.data.length; i += 4) {
    const c = mask.data[i]; // grey value = class index (8-bit masks)
    if (c === 0 || c >= colours.length) continue; // background stays transparent
    const [r, g, b] = colours[c];
    out.data[i] = r;
    out.data[i + 1] = g;
    out.data[i + 2] = b;
    out.data[i + 3] = 255;
  }
  context.putImageData(out, 0, 0);
  setMaskOpacity(opacity);
  canvas.hidden = false;

  const list = $("legend");
  const present = answer.class_shares.filter((s) => s.share > 0);
  present.sort((a, b) => (a.class_id === 0) - (b.class_id === 0) || b.share - a.share || a.class_id - b.class_id);
  for (const s of present) {
    const item = el("li");
    item.dataset.label = s.label;
    item.dataset.share = String(s.share);
    const name = s.class_id === 0 ? `${s.label} (not coloured)` : s.label;
    item.append(swatch(s.class_id === 0 ? null : classColour(s.class_id)), el("span", "legend-label", name), el("span", "legend-value", percent(s.share)));
    list.append(item);
  }
  $("legend-panel").hidden = false;
  const found = present.filter((s) => s.class_id !== 0).length;
  return `${found} class${found === 1 ? "" : "es"} found`;
}

export function setMaskOpacity(opacity) {
  $("mask-canvas").style.opacity = String(opacity);
}

// ---------------------------------------------------------------- timings

const STAGES = ["decode", "preprocess", "queue", "compute", "postprocess", "total"];

/** The time per stage; a pipeline's stages (decode, each step, crop) in the server's order. */
export function renderTimings(timings, stages = STAGES) {
  const body = $("timings").tBodies[0];
  body.replaceChildren();
  const total = Math.max(timings.total || 0, 1e-9);
  for (const stage of stages) {
    const ms = Number(timings[stage] || 0);
    const row = el("tr");
    row.dataset.stage = stage;
    if (stage === "total") row.className = "total";
    const bar = el("span", "time-bar");
    bar.style.width = `${Math.min(100, (100 * ms) / total)}%`;
    const cell = el("td", "time-bar-cell");
    cell.append(bar);
    row.append(el("th", "", stage), el("td", "num", ms < 1 ? ms.toFixed(2) : ms.toFixed(1)), cell);
    row.firstChild.scope = "row";
    body.append(row);
  }
}
