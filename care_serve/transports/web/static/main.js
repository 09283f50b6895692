// The page's entry point: model choice, the image, running a request and drawing its answer.

import {
  ENDPOINTS,
  credentials,
  infer,
  listModels,
  listPipelines,
  listTasks,
  modelLabels,
  runPipeline,
} from "./api.js";
import { hideError, showError } from "./feedback.js";
import { setupImageInput } from "./image_input.js";
import { renderModels } from "./models_panel.js";
import { refreshStreams, setStreamTargets, setupStreams } from "./streams_panel.js";
import {
  clearResult,
  filterDetections,
  renderClassification,
  renderDetection,
  renderEmbedding,
  renderPipeline,
  renderSegmentation,
  renderTimings,
  setMaskOpacity,
} from "./render.js";
import { $ } from "./dom.js";

let TASKS = ["classification", "detection", "segmentation"]; // replaced by GET /tasks
const TASK_NAMES = {
  classification: "Classification",
  detection: "Detection",
  segmentation: "Segmentation",
  embedding: "Embedding",
};

/** The models of GET /models by name: their domain and served parameters. */
const MODELS = new Map();
/** The pipelines of GET /pipelines: a detector, then a classifier of each box. */
let PIPELINES = [];
/** The class names of each classifier a pipeline uses (its boxes' colours), by model name. */
const LABELS = new Map();

/** The class names of pipeline `name`'s classifier ([] when unknown). */
async function pipelineLabels(name) {
  const steps = PIPELINES.find((p) => p.name === name)?.steps || [];
  const model = steps.find((s) => s.task === "classification")?.model;
  if (!model) return [];
  if (!LABELS.has(model)) LABELS.set(model, await modelLabels(model).catch(() => []));
  return LABELS.get(model);
}

const state = {
  image: null, // the Blob sent
  imageUrl: null,
  description: "",
  answer: null, // the last successful answer
  answerTask: null,
  embeddings: [], // the last two embeddings: [{model, description, vector}], newest last
  runs: 0, // requests started; an older answer arriving late is ignored
};

// ------------------------------------------------------------------ model choice

function selection() {
  const [task, model] = $("model-select").value.split("|");
  return { task: task || "classification", model: model || "" };
}

function fillModelSelect(models, pipelines) {
  const select = $("model-select");
  const previous = select.value;
  select.replaceChildren();
  const tasks = [...TASKS, ...new Set(models.map((m) => m.task).filter((t) => t && !TASKS.includes(t)))];
  for (const task of tasks) {
    const group = document.createElement("optgroup");
    group.label = TASK_NAMES[task] || task;
    const fallback = new Option(`${TASK_NAMES[task] || task}: default model`, `${task}|`);
    fallback.disabled = !(task in ENDPOINTS);
    group.append(fallback);
    for (const m of models.filter((x) => x.task === task)) {
      const version = m.loaded_version ? `v${m.loaded_version}` : `versions ${(m.versions || []).join(", ") || "none"}`;
      const option = new Option(`${m.name} · ${version} · ${m.state}`, `${task}|${m.name}`);
      option.disabled = !(task in ENDPOINTS);
      group.append(option);
    }
    select.append(group);
  }
  if (pipelines.length) {
    const group = document.createElement("optgroup");
    group.label = "Pipelines (detect, then classify each box)";
    for (const p of pipelines) {
      const option = new Option(`${p.name}${p.ready ? "" : " · not ready"}`, `pipeline|${p.name}`);
      option.disabled = !p.ready;
      option.title = p.ready ? p.description : p.problem || "";
      group.append(option);
    }
    select.append(group);
  }
  if ([...select.options].some((o) => o.value === previous)) select.value = previous;
  showTaskFields();
}

/** The model that answers the current choice: the one picked, or the task's default. */
function answeringModel() {
  const { task, model } = selection();
  if (task === "pipeline") return undefined;
  if (model) return MODELS.get(model);
  return [...MODELS.values()].find((m) => (m.default_for || []).includes(task));
}

/** Start the controls at what the answering model serves when a request leaves them out. */
function applyServedDefaults() {
  const parameters = answeringModel()?.parameters || {};
  if (parameters.top_k) {
    $("top-k").value = String(parameters.top_k.default);
    $("top-k").max = String(parameters.top_k.maximum);
  }
  if (parameters.score_threshold) {
    const value = Number(parameters.score_threshold.default);
    $("score-slider").value = String(value);
    $("score-value").textContent = value.toFixed(2);
  }
}

/** What the model knows, next to every result; a warning when the model says it is unsure. */
function showDomain(answer) {
  if (!answer.model) {
    $("domain-notice").hidden = true;
    $("uncertain-notice").hidden = true;
    return;
  }
  const domain = MODELS.get(answer.model)?.model_card?.domain;
  $("domain-notice").hidden = !domain;
  $("domain-notice").textContent = domain ? `${answer.model} knows: ${domain}.` : "";
  $("uncertain-notice").hidden = !answer.uncertain;
  $("uncertain-notice").textContent = answer.uncertain
    ? `This image looks unlike what ${answer.model} was trained on: do not trust these classes.`
    : "";
}

function showTaskFields() {
  const { task } = selection();
  for (const field of document.querySelectorAll("[data-task]")) field.hidden = field.dataset.task !== task;
}

/** A 401 means the server wants an API key: show the key field and say so. */
function askForKey(err) {
  if (err.status !== 401) return;
  $("api-key-field").hidden = false;
  $("api-key").focus();
}

/** GET /tasks, /models and /pipelines; `keepError`: leave a refused load or unload shown. */
async function refreshModels({ keepError = false } = {}) {
  try {
    TASKS = (await listTasks()).map((t) => t.name);
    const models = await listModels();
    // A server without pipelines (or an older one) still serves the tasks.
    PIPELINES = await listPipelines().catch(() => []);
    if (!keepError) hideError("models-error");
    MODELS.clear();
    LABELS.clear(); // a model loaded again may have other classes
    for (const m of models) MODELS.set(m.name, m);
    fillModelSelect(models, PIPELINES);
    setStreamTargets(PIPELINES, models);
    applyServedDefaults();
    renderModels(models, refreshModels);
    document.body.dataset.models = "listed"; // tests wait for this
  } catch (err) {
    showError("models-error", err);
    askForKey(err);
    document.body.dataset.models = "failed";
  }
}

// ------------------------------------------------------------------ running

const threshold = () => Number($("score-slider").value);
const opacity = () => Number($("opacity-slider").value);

function taskParams(task) {
  if (task === "classification") return { top_k: $("top-k").value };
  // All boxes down to the slider's minimum: the slider then filters without a new request.
  if (task === "detection") return { score_threshold: $("score-slider").min };
  return {};
}

async function run() {
  if (!state.image) {
    $("status").textContent = "Choose, drop or paste an image first.";
    return;
  }
  const { task, model } = selection();
  const run = ++state.runs;
  hideError("error");
  $("result").setAttribute("aria-busy", "true");
  $("result").dataset.state = "busy";
  const target = task === "pipeline" ? `pipeline ${model}` : model || `the default ${task} model`;
  $("status").textContent = `Sending ${state.description} to ${target}…`;
  try {
    const answer =
      task === "pipeline"
        ? { ...(await runPipeline(model, state.image)), labels: await pipelineLabels(model) }
        : await infer(task, state.image, { model, params: taskParams(task) });
    if (run !== state.runs) return;
    await show(task, answer);
    $("result").dataset.state = "done";
  } catch (err) {
    if (run !== state.runs) return;
    state.answer = null;
    $("result-body").hidden = true;
    $("domain-notice").hidden = true;
    $("uncertain-notice").hidden = true;
    $("status").textContent = "The request failed.";
    showError("error", err);
    askForKey(err);
    $("result").dataset.state = "error";
  } finally {
    if (run === state.runs) $("result").removeAttribute("aria-busy");
  }
}

async function show(task, answer) {
  clearResult();
  state.answer = answer;
  state.answerTask = task;
  $("stage-image").alt = state.description;
  // The stage keeps the image's aspect ratio, so the boxes and the mask stay on it at any size.
  $("stage").style.setProperty("--aspect", String(answer.image_width / answer.image_height));
  $("stage-caption").textContent =
    `${state.description}, ${answer.image_width} × ${answer.image_height} px`;
  $("result-body").hidden = false;
  let summary;
  if (task === "classification") summary = renderClassification(answer);
  else if (task === "detection") summary = renderDetection(answer, threshold());
  else if (task === "embedding") summary = renderEmbedding(answer, rememberEmbedding(answer));
  else if (task === "pipeline") summary = renderPipeline(answer, answer.labels);
  else summary = await renderSegmentation(answer, opacity());
  if (task === "pipeline") {
    // decode, each step by its name, crop, total: in the order the server ran them.
    const stages = Object.keys(answer.timings_ms).filter((k) => k !== "total");
    renderTimings(answer.timings_ms, [...stages, "total"]);
  } else {
    renderTimings(answer.timings_ms);
  }
  const ms = answer.timings_ms.total;
  const who = task === "pipeline" ? `Pipeline ${answer.pipeline}` : `${answer.model} v${answer.version}`;
  $("status").textContent = `${who}: ${summary} · ${ms.toFixed(1)} ms in the server`;
  showDomain(answer);
}

/** Keep the last two embeddings; the previous one of the same model, to compare with. */
function rememberEmbedding(answer) {
  const previous = state.embeddings.findLast(
    (e) => e.model === answer.model && e.description !== state.description,
  );
  state.embeddings = [...state.embeddings.slice(-1), {
    model: answer.model,
    description: state.description,
    vector: answer.embedding,
  }];
  return previous || null;
}

function setImage(blob, description) {
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  state.image = blob;
  state.imageUrl = URL.createObjectURL(blob);
  state.description = description;
  $("stage-image").src = state.imageUrl;
  $("run-button").disabled = false;
  run();
}

// ------------------------------------------------------------------ wiring

function wire() {
  $("model-select").addEventListener("change", () => {
    showTaskFields();
    applyServedDefaults();
    if (state.image) run();
  });
  $("run-form").addEventListener("submit", (event) => {
    event.preventDefault();
    run();
  });
  $("top-k").addEventListener("change", () => state.image && run());
  $("score-slider").addEventListener("input", () => {
    $("score-value").textContent = threshold().toFixed(2);
    if (state.answer && state.answerTask === "detection") {
      const summary = filterDetections(state.answer, threshold());
      $("status").textContent = `${state.answer.model} v${state.answer.version}: ${summary}`;
    }
  });
  $("opacity-slider").addEventListener("input", () => {
    $("opacity-value").textContent = `${Math.round(opacity() * 100)} %`;
    setMaskOpacity(opacity());
  });
  $("refresh-models").addEventListener("click", () => refreshModels());
  $("api-key").addEventListener("change", () => {
    credentials.apiKey = $("api-key").value.trim();
    sessionStorage.setItem("care-serve-api-key", credentials.apiKey);
    refreshModels();
    refreshStreams();
  });
  credentials.apiKey = sessionStorage.getItem("care-serve-api-key") || "";
  $("api-key").value = credentials.apiKey;
  if (credentials.apiKey) $("api-key-field").hidden = false;
  setupImageInput(setImage);
  setupStreams();
}

wire();
refreshModels();
