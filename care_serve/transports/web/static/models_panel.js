// The models panel: each model's state and versions, with load / unload buttons.

import { loadModel, unloadModel } from "./api.js";
import { showError, hideError } from "./feedback.js";
import { $, el } from "./dom.js";


function modelCard(model, act) {
  const card = el("li", "model-card");
  card.dataset.model = model.name;
  card.dataset.state = model.state;
  const head = el("div", "model-card-head");
  head.append(el("h3", "", model.name), el("span", `badge state-${model.state}`, model.state));
  card.append(head);

  const facts = el("dl", "facts");
  const add = (term, value) => {
    if (value === undefined || value === null || value === "") return;
    facts.append(el("dt", "", term), el("dd", "", String(value)));
  };
  add("Task", model.task);
  const serving = model.loaded_versions || (model.loaded_version ? [model.loaded_version] : []);
  add(
    "Serving",
    serving.length
      ? `${serving.length > 1 ? "versions" : "version"} ${serving.join(", ")}` +
          (serving.length > 1 ? ` (default ${model.loaded_version})` : "")
      : "not loaded",
  );
  add("Versions", (model.versions || []).join(", ") || "none on disk");
  if ((model.default_for || []).length) add("Default for", model.default_for.join(", "));
  add("Backend", model.backend);
  if (model.input) add("Input", `${model.input.width} × ${model.input.height}`);
  card.append(facts);
  const description = model.model_card && model.model_card.description;
  if (description) card.append(el("p", "hint", description));
  if (model.error) card.append(el("p", "model-error", model.error));

  const actions = el("div", "model-actions");
  const id = `version-${model.name}`;
  const label = el("label", "", "Version");
  label.htmlFor = id;
  const select = el("select");
  select.id = id;
  for (const v of [...(model.versions || [])].reverse()) {
    const option = el("option", "", `v${v}`);
    option.value = String(v);
    if (v === model.loaded_version) option.selected = true;
    select.append(option);
  }
  const load = el("button", "", model.loaded_version ? "Reload" : "Load");
  load.type = "button";
  load.disabled = !(model.versions || []).length;
  load.setAttribute("aria-label", `${load.textContent} ${model.name}`);
  load.addEventListener("click", () => act("load", model.name, select.value));
  const unload = el("button", "secondary", "Unload");
  unload.type = "button";
  const servingSelected = () => serving.includes(Number(select.value));
  unload.disabled = !servingSelected();
  select.addEventListener("change", () => {
    unload.disabled = !servingSelected();
  });
  unload.setAttribute("aria-label", `Unload ${model.name}`);
  unload.title = "Unload the selected version";
  unload.addEventListener("click", () => act("unload", model.name, select.value));
  actions.append(label, select, load, unload);
  card.append(actions);
  return card;
}

/** What an unload left: the version gone, and what of the model still serves. */
function unloadedText(name, version, info) {
  const gone = version ? `${name} v${version} is unloaded` : `${name} is unloaded`;
  const serving = info.loaded_versions || [];
  if (!serving.length) return `${gone}; no version of it serves now.`;
  const list = serving.map((v) => `v${v}`).join(", ");
  return `${gone}; ${list} ${serving.length > 1 ? "serve" : "serves"}.`;
}

/** Draw `models` in the panel; `refresh({keepError})` is called after a load or unload. */
export function renderModels(models, refresh) {
  const list = $("model-list");
  const status = $("models-status");
  const act = async (what, name, version) => {
    hideError("models-error");
    for (const button of list.querySelectorAll("button")) button.disabled = true;
    status.textContent = `${what === "load" ? "Loading" : "Unloading"} ${name} v${version}…`;
    let refused = false;
    try {
      const token = $("admin-token").value.trim();
      const info =
        what === "load" ? await loadModel(name, version, token) : await unloadModel(name, version, token);
      status.textContent =
        what === "load" ? `${name} v${info.loaded_version} is ${info.state}.` : unloadedText(name, version, info);
    } catch (err) {
      status.textContent = "";
      showError("models-error", err);
      refused = true;
    }
    await refresh({ keepError: refused }); // the refusal stays shown
  };
  list.replaceChildren(...models.map((m) => modelCard(m, act)));
  if (!models.length) list.append(el("li", "hint", "The model store is empty."));
}
