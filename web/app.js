// Entry point: wires the form, the key store, the job list and the live socket.
// Protocol: docs/PROTOCOL.md (WebSocket /ws and REST /api).

import { BundleList } from "./bundles.js";
import { el, setText, show } from "./dom.js";
import { ACTIVE_STATES, checkUrl, formatRate, nameFromUrl, toPercent } from "./format.js";
import { JobList, displayLabel } from "./jobs.js";
import { LibraryView } from "./library.js";
import { SetPicker } from "./sets.js";
import { LiveSocket } from "./socket.js";
import { savedTokenFields, setupTokens } from "./tokens.js";
import { ModelTypes } from "./types.js";
import { maxUrlLength, setVocabulary } from "./vocabulary.js";

const $ = (id) => document.getElementById(id);

const ui = {
  connection: $("connection"),
  connectionText: $("connection-text"),
  engine: $("engine"),
  engineHint: $("engine-hint"),
  form: $("download-form"),
  type: $("type"),
  typeFolder: $("type-folder"),
  url: $("url"),
  urlError: $("url-error"),
  name: $("name"),
  overwrite: $("overwrite"),
  download: $("download"),
  formStatus: $("form-status"),
  jobs: $("jobs"),
  jobsEmpty: $("jobs-empty"),
  jobsSummary: $("jobs-summary"),
  clearFinished: $("clear-finished"),
  showCleared: $("show-cleared"),
  toasts: $("toasts"),
  accessHint: $("access-hint"),
  notices: $("server-notices"),
};

const BASE_TITLE = document.title;
const REQUEST_TIMEOUT = 20_000;

const state = {
  // Download requests sent by this page and not answered yet: id -> {url, timer}.
  pending: new Map(),
  // Actions sent by this page: id -> {job, action}.
  actions: new Map(),
  nextId: 1,
  connected: false,
  refused: null, // the reason of the server's last 1008 close, until a connection works
};

// ---------- model types ----------

const types = new ModelTypes({ select: ui.type, folderHint: ui.typeFolder, onChange: () => jobs.markAllDirty() });

// ---------- messages beside the form and toasts ----------

function showUrlError(message) {
  setText(ui.urlError, message);
  show(ui.urlError, true);
  ui.url.setAttribute("aria-invalid", "true");
  setText(ui.formStatus, "");
}

function clearUrlError() {
  setText(ui.urlError, "");
  show(ui.urlError, false);
  ui.url.removeAttribute("aria-invalid");
}

let formStatusTimer = 0;
function formStatus(text) {
  clearTimeout(formStatusTimer);
  setText(ui.formStatus, text);
  if (text) formStatusTimer = setTimeout(() => setText(ui.formStatus, ""), 6000);
}

function toast(message, kind = "error") {
  const close = el("button", { type: "button", class: "toast-close", "aria-label": "Dismiss", text: "×" });
  const item = el("div", { class: `toast ${kind}` }, [el("p", { text: message }), close]);
  const remove = () => item.remove();
  close.addEventListener("click", remove);
  ui.toasts.append(item);
  while (ui.toasts.childElementCount > 4) ui.toasts.firstElementChild.remove();
  setTimeout(remove, 8000);
}

ui.url.addEventListener("input", () => {
  if (!ui.urlError.hidden) clearUrlError();
});

// ---------- sending ----------

function send(message) {
  return socket.send(message);
}

function submitDownload() {
  const check = checkUrl(ui.url.value, maxUrlLength());
  if (!check.ok) {
    showUrlError(check.message);
    ui.url.focus();
    return;
  }
  const type = ui.type.value;
  if (!type || !types.has(type)) {
    showUrlError("The model types have not loaded yet. Wait for the connection and try again.");
    return;
  }
  const data = { type, url: check.url };
  const name = ui.name.value.trim();
  if (name) data.name = name;
  if (ui.overwrite.checked) data.overwrite = true;
  Object.assign(data, savedTokenFields());
  const id = state.nextId;
  state.nextId += 1;
  if (!send({ type: "download", id, data })) {
    showUrlError("Not connected to the server. Wait until it says Connected, then try again.");
    return;
  }
  clearUrlError();
  const timer = setTimeout(() => {
    if (state.pending.delete(id)) formStatus("The server has not answered yet; the download may still appear below.");
  }, REQUEST_TIMEOUT);
  state.pending.set(id, { url: check.url, timer });
  formStatus(`Sending ${nameFromUrl(check.url)}…`);
}

ui.form.addEventListener("submit", (event) => {
  event.preventDefault();
  submitDownload();
});

function sendAction(action, jobId) {
  const id = state.nextId;
  state.nextId += 1;
  if (!send({ type: action, id, data: { job: jobId } })) {
    jobs.markBusy(jobId, action, false);
    toast("Not connected to the server. The action was not sent.");
    return;
  }
  state.actions.set(id, { job: jobId, action });
  setTimeout(() => state.actions.delete(id), REQUEST_TIMEOUT);
}

function sendBundleAction(action, bundleId) {
  // the same commands, for every file of the set they fit
  const id = state.nextId;
  state.nextId += 1;
  if (!send({ type: action, id, data: { bundle: bundleId } })) toast("Not connected to the server. The action was not sent.");
}

// ---------- receiving ----------

function showNotices(notices) {
  // what the server had to do at start that a person should know (e.g. a damaged job list set aside)
  const lines = Array.isArray(notices) ? notices.filter((n) => typeof n === "string" && n) : [];
  setText(ui.notices, lines.join(" "));
  show(ui.notices, lines.length > 0);
}

function onHello(data) {
  setVocabulary(data.vocabulary);
  showEngine(data.engine);
  showNotices(data.notices);
  if (!types.set(data.types) && !types.list.length) types.load();
  bundles.replaceAll(data.bundles);
  jobs.replaceAll(data.jobs);
  models.refresh();
}

function showEngine(engine) {
  if (!engine || typeof engine !== "object") {
    setText(ui.engine, "Engine: unknown");
    show(ui.engineHint, false);
    return;
  }
  const name = typeof engine.name === "string" && engine.name ? engine.name : "unknown";
  const version = typeof engine.version === "string" && engine.version ? ` ${engine.version}` : "";
  const limit = Number(engine.download_limit) > 0 ? ` · limit ${formatRate(Number(engine.download_limit) / 1e6)}` : "";
  setText(ui.engine, `Engine: ${name}${version}${engine.fallback ? " (fallback)" : ""}${limit}`);
  ui.engine.dataset.fallback = String(engine.fallback === true);
  let hint = "";
  if (engine.fallback === true) {
    hint = typeof engine.hint === "string" && engine.hint
      ? engine.hint
      : "aria2c not found: using the slower single-connection fallback";
  } else if (engine.connected === false) {
    hint = typeof engine.hint === "string" && engine.hint
      ? engine.hint
      : "aria2 is not reachable right now: downloads wait until it is back.";
  } else if (typeof engine.hint === "string" && engine.hint) {
    hint = engine.hint;
  }
  const warnings = Array.isArray(engine.warnings) ? engine.warnings.filter((w) => typeof w === "string") : [];
  if (warnings.length) hint = [hint, ...warnings].filter(Boolean).join(" ");
  setText(ui.engineHint, hint);
  show(ui.engineHint, hint !== "");
}

function onDownload(message) {
  const data = message.data && typeof message.data === "object" ? message.data : {};
  const hasId = message.id !== undefined && message.id !== null;
  const request = hasId ? state.pending.get(message.id) : undefined;
  if (message.job === null || message.job === undefined) {
    // A refusal: only meaningful to the page that sent that request.
    if (request && data.status === "error") {
      clearTimeout(request.timer);
      state.pending.delete(message.id);
      showUrlError(typeof data.message === "string" && data.message ? data.message : "The server refused this link.");
      ui.url.focus();
    }
    return;
  }
  if (typeof message.job !== "string") return;
  const existing = jobs.job(message.job);
  const wasActive = Boolean(existing && ACTIVE_STATES.has(existing.state));
  const job = jobs.applyEvent(message.job, data);
  if (request && data.status === "started") {
    clearTimeout(request.timer);
    state.pending.delete(message.id);
    accepted(message.job, job, wasActive);
  }
  if (data.status === "success") models.scheduleRefresh();
}

function onBundle(message) {
  // a set's change for everyone; `accepted` also answers this page's folder link
  const data = message.data && typeof message.data === "object" ? message.data : {};
  if (typeof message.bundle !== "string") return;
  bundles.apply({ ...data, id: message.bundle });
  const hasId = message.id !== undefined && message.id !== null;
  const request = hasId ? state.pending.get(message.id) : undefined;
  if (request && data.status === "accepted") {
    clearTimeout(request.timer);
    state.pending.delete(message.id);
    ui.url.value = "";
    clearUrlError();
    formStatus(`Added a set of ${data.counts?.total ?? 0} files: ${data.name ?? ""}`);
  }
  if (data.state === "completed") models.scheduleRefresh();
}

function bundleCreated(bundle) {
  bundles.apply(bundle);
  formStatus(`Added a set of ${bundle.counts?.total ?? 0} files: ${bundle.name ?? ""}`);
  bundles.element(bundle.id)?.scrollIntoView({ block: "nearest", behavior: "smooth" });
}

function accepted(jobId, job, duplicate) {
  ui.url.value = "";
  ui.name.value = "";
  ui.overwrite.checked = false;
  clearUrlError();
  const label = displayLabel(job);
  if (duplicate) {
    formStatus(`Already downloading: ${label}`);
    const card = jobs.element(jobId);
    if (card) {
      card.hidden = false;
      card.scrollIntoView({ block: "nearest", behavior: "smooth" });
      card.classList.remove("flash");
      void card.offsetWidth; // restart the animation
      card.classList.add("flash");
    }
  } else {
    formStatus(`Added: ${label}`);
  }
}

function onError(message) {
  const data = message.data && typeof message.data === "object" ? message.data : {};
  const text = typeof data.message === "string" && data.message ? data.message : "The server could not do that.";
  const hasId = message.id !== undefined && message.id !== null;
  if (hasId && state.actions.has(message.id)) {
    const { job, action } = state.actions.get(message.id);
    state.actions.delete(message.id);
    jobs.markBusy(job, action, false);
  }
  if (hasId && state.pending.has(message.id)) {
    clearTimeout(state.pending.get(message.id).timer);
    state.pending.delete(message.id);
    showUrlError(text);
    return;
  }
  toast(text);
}

function onMessage(message) {
  switch (message.type) {
    case "hello":
      onHello(message.data && typeof message.data === "object" ? message.data : {});
      break;
    case "download":
      onDownload(message);
      break;
    case "bundle":
      onBundle(message);
      break;
    case "error":
      onError(message);
      break;
    case "library": // scan progress, files changed or removed
      models.onEvent(message.data);
      break;
    case "engine": // the engine went away, came back, or its settings changed (a speed limit)
      if (message.data && typeof message.data === "object") showEngine(message.data);
      break;
    default:
      break; // pong and anything newer
  }
}

function onStatus(connection, info) {
  state.connected = connection === "connected";
  ui.connection.dataset.state = connection;
  let text;
  if (connection === "connected") text = "Connected";
  else if (connection === "offline") {
    text = navigator.onLine === false
      ? "Offline: no network"
      : `Offline: retrying${info.retryIn ? ` in ${Math.round(info.retryIn / 1000)} s` : ""}`;
  } else if (info.first) text = "Connecting…";
  else text = `Reconnecting${info.retryIn ? ` in ${Math.max(1, Math.round(info.retryIn / 1000))} s` : ""}…`;
  setText(ui.connectionText, text);
  if (state.connected) {
    state.refused = null;
    show(ui.accessHint, false);
  }
  else if (!info.first) checkAccess();
  ui.connection.title = connection === "connected" ? "Live updates are on" : "Live updates are paused until the server answers";
  ui.jobs.classList.toggle("stale", !state.connected);
}

// When the socket keeps failing, ask the REST side why: a 401/403 means the server wants
// its access token (opened from another address than the printed link).
let lastAccessCheck = 0;
async function checkAccess() {
  if (Date.now() - lastAccessCheck < 4000) return;
  lastAccessCheck = Date.now();
  let response;
  try {
    response = await fetch("api/health", { headers: { Accept: "application/json" }, cache: "no-store" });
  } catch {
    show(ui.accessHint, false); // the server is simply down
    return;
  }
  if (response.status === 401 || response.status === 403) {
    let message = "The server refused this page. Open the link it printed when it started.";
    try {
      const body = await response.json();
      if (typeof body?.error?.message === "string" && body.error.message) message = body.error.message;
    } catch {
      // keep the default text
    }
    setText(ui.accessHint, message);
    show(ui.accessHint, true);
  } else {
    show(ui.accessHint, Boolean(state.refused)); // REST works; the socket's refusal still stands
  }
}

// ---------- the job list ----------

function jobsChanged() {
  const counts = jobs.counts();
  const parts = [];
  if (counts.active) parts.push(`${counts.active} active`);
  if (counts.finished) parts.push(`${counts.finished} finished`);
  setText(ui.jobsSummary, parts.join(" · "));
  show(ui.jobsEmpty, counts.visible === 0 && bundles.size === 0);
  setText(
    ui.jobsEmpty,
    jobs.size && counts.cleared ? "Finished downloads are cleared. New ones appear here." : "No downloads yet. Paste a link above to start one.",
  );
  ui.clearFinished.disabled = counts.finished - counts.cleared <= 0 && !(jobs.showCleared && counts.cleared);
  show(ui.showCleared, counts.cleared > 0);
  setText(ui.showCleared, jobs.showCleared ? "Hide cleared" : `Show cleared (${counts.cleared})`);
  ui.showCleared.setAttribute("aria-pressed", String(jobs.showCleared));
  const title = counts.active && counts.overall !== null ? `(${toPercent(counts.overall)}%) ${BASE_TITLE}` : BASE_TITLE;
  if (document.title !== title) document.title = title;
}

function verifyExisting(job) {
  // the same link again, asking the server to compare the file in place byte for byte
  const id = state.nextId;
  state.nextId += 1;
  const data = { url: job.url, type: job.type, verify_existing: true, ...savedTokenFields() };
  if (!send({ type: "download", id, data })) toast("Not connected to the server. Nothing was sent.");
}

const jobs = new JobList(ui.jobs, {
  onAction: sendAction,
  onVerify: verifyExisting,
  describeType: (name) => types.describe(name),
  onChange: jobsChanged,
  inBundle: (jobId) => Boolean(bundles.bundleOf(jobId)),
  onRendered: (jobId) => bundles.jobChanged(jobId),
});

const bundles = new BundleList($("bundles"), {
  onAction: sendBundleAction,
  job: (jobId) => jobs.job(jobId),
  onChange: () => {
    jobs.markAllDirty(); // a file that joined a bundle leaves the list
    jobsChanged();
  },
});

new SetPicker({
  panel: $("set-panel"),
  title: $("set-title"),
  summary: $("set-summary"),
  head: $("set-head"),
  rows: $("set-rows"),
  versions: $("set-versions"),
  error: $("set-error"),
  download: $("set-download"),
  close: $("set-close"),
  drop: $("download-section"),
  openFile: $("open-workflow"),
  fileInput: $("workflow-file"),
  civitaiButton: $("choose-civitai"),
  url: ui.url,
  defaultType: () => ui.type.value || "auto",
  tokens: savedTokenFields,
  onCreated: bundleCreated,
});

ui.clearFinished.addEventListener("click", () => {
  const count = jobs.clearFinished();
  formStatus(count ? `Cleared ${count} finished ${count === 1 ? "download" : "downloads"}.` : "");
  jobsChanged();
});
ui.showCleared.addEventListener("click", () => {
  jobs.toggleShowCleared();
  jobsChanged();
});

// ---------- installed models, keys, socket ----------

const models = new LibraryView({
  section: $("models-section"),
  list: $("models"),
  status: $("models-status"),
  refresh: $("models-refresh"),
  scan: $("models-scan"),
  filter: $("models-filter"),
  type: $("models-type"),
  base: $("models-base"),
  typeOrder: () => types.list,
  toast,
  tokens: () => ({ civitai_token: savedTokenFields().civitai_token }),
});

setupTokens({
  form: $("tokens-form"),
  inputs: { civitai: $("civitai-token"), hf: $("hf-token") },
  status: $("tokens-status"),
});

function socketUrl() {
  const url = new URL("ws", window.location.href);
  url.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
  url.hash = "";
  url.search = "";
  return url.href;
}

// What the server's 1008 close says, in words for the person at the page.
const REFUSED_TEXT = {
  forbidden_origin:
    "The server refused this page because it was opened from another site or address. Open the page from the server's own address.",
  unauthorized: "The server needs its access token: open the link it printed when it started.",
};

function onRefused(reason) {
  state.refused = reason;
  setText(ui.accessHint, REFUSED_TEXT[reason] ?? `The server refused the live connection (${reason}).`);
  show(ui.accessHint, true);
}

const socket = new LiveSocket(socketUrl(), { onMessage, onStatus, onRefused });
jobsChanged();
socket.start();
