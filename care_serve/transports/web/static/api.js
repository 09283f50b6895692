// Calls to this server's REST API. Every failure becomes an ApiError carrying the server's
// own {"error": {"type", "message"}} when it sent one.

export class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

async function failure(response) {
  let type = `HTTP ${response.status}`;
  let message = response.statusText || "request failed";
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (body && body.error && typeof body.error === "object") {
      type = body.error.type || type;
      message = body.error.message || message;
    } else if (body && body.detail) {
      message = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    }
  } catch {
    if (text) message = text.slice(0, 500);
  }
  return new ApiError(response.status, type, message);
}

/** The API key the page sends with every call (empty: none); kept in this tab only. */
export const credentials = { apiKey: "" };

/** fetch `path` with the API key (unless `options` bring their own Authorization). */
async function send(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (credentials.apiKey && !headers.Authorization) headers.Authorization = `Bearer ${credentials.apiKey}`;
  try {
    return await fetch(path, { ...options, headers });
  } catch (err) {
    throw new ApiError(0, "NetworkError", `the server did not answer (${err.message})`);
  }
}

async function call(path, options = {}) {
  const response = await send(path, options);
  if (!response.ok) throw await failure(response);
  return response.json();
}

/** GET /models: every model loaded or in the store. */
export async function listModels() {
  return (await call("/models")).models;
}

/** The route of each task this server answers (filled by listTasks). */
export const ENDPOINTS = {};

/** GET /tasks: the tasks this server answers, with their routes; fills ENDPOINTS. */
export async function listTasks() {
  const { tasks } = await call("/tasks");
  for (const task of tasks) ENDPOINTS[task.name] = `/${task.route}`;
  return tasks;
}

/** POST the image to the task's endpoint; `params` become the query string. */
export async function infer(task, image, { model = "", params = {} } = {}) {
  const query = new URLSearchParams();
  if (model) query.set("model", model);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") query.set(key, String(value));
  }
  const qs = query.toString();
  return call(`${ENDPOINTS[task]}${qs ? `?${qs}` : ""}`, {
    method: "POST",
    body: image,
    headers: { "Content-Type": image.type || "application/octet-stream" },
  });
}

function adminHeaders(token) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** POST /models/{name}/load (optionally one version). */
export async function loadModel(name, version, token) {
  const qs = version ? `?version=${encodeURIComponent(version)}` : "";
  return call(`/models/${encodeURIComponent(name)}/load${qs}`, {
    method: "POST",
    headers: adminHeaders(token),
  });
}

/** POST /models/{name}/unload (one version, or every version without one). */
export async function unloadModel(name, version, token) {
  const qs = version ? `?version=${encodeURIComponent(version)}` : "";
  return call(`/models/${encodeURIComponent(name)}/unload${qs}`, {
    method: "POST",
    headers: adminHeaders(token),
  });
}

// ------------------------------------------------------------------ pipelines

/** GET /pipelines: the store's pipelines, their steps and whether they can run. */
export async function listPipelines() {
  return (await call("/pipelines")).pipelines;
}

/** POST the image to /pipelines/{name}: detect, then classify each box. */
export async function runPipeline(name, image) {
  return call(`/pipelines/${encodeURIComponent(name)}`, {
    method: "POST",
    body: image,
    headers: { "Content-Type": image.type || "application/octet-stream" },
  });
}

/** The class names of model `name`, from its Open Inference Protocol metadata ([] if none). */
export async function modelLabels(name) {
  const metadata = await call(`/v2/models/${encodeURIComponent(name)}`);
  return (metadata.parameters && metadata.parameters.labels) || [];
}

// ------------------------------------------------------------------ streams

/** GET /streams: every stream and its state. */
export async function listStreams() {
  return (await call("/streams")).streams;
}

/** POST /streams (admin credential): start the stream `spec`. */
export async function addStream(spec, token) {
  return call("/streams", {
    method: "POST",
    body: JSON.stringify(spec),
    headers: { "Content-Type": "application/json", ...adminHeaders(token) },
  });
}

/** DELETE /streams/{name} (admin credential): stop and remove it. */
export async function removeStream(name, token) {
  return call(`/streams/${encodeURIComponent(name)}`, {
    method: "DELETE",
    headers: adminHeaders(token),
  });
}

/** GET /streams/{name}/frame.jpg: the newest processed frame, or null before the first. */
export async function streamFrame(name, signal) {
  const response = await send(`/streams/${encodeURIComponent(name)}/frame.jpg`, {
    cache: "no-store",
    signal,
  });
  if (response.status === 404) {
    await response.body?.cancel();
    return null;
  }
  if (!response.ok) throw await failure(response);
  return response.blob();
}
