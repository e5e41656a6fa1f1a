// Asking for a set of files: a ComfyUI workflow dropped or pasted (its models, which are in
// place, "Download missing"), several links pasted at once or a list file dropped, and the
// files of a CivitAI version to tick. The server reads and checks everything; this panel
// shows its answer and sends the choice back as one bundle (POST /api/bundles).

import { el, setText, show } from "./dom.js";
import { formatBytes } from "./format.js";
import { callApi } from "./rest.js";

const WORKFLOW_STATUS = {
  present: "In place",
  missing: "Missing",
  no_link: "No link",
  different: "Different file",
};
const LIST_FILE = /\.(txt|list|csv)$/i;

export class SetPicker {
  /**
   * @param {object} parts the panel's elements and the page's callbacks:
   *   {panel, title, summary, head, rows, versions, error, download, close, drop, openFile, fileInput,
   *    civitaiButton, url, defaultType: () => string, tokens: () => object,
   *    onCreated: (bundle) => void}
   */
  constructor(parts) {
    this.ui = parts;
    this.request = null; // the body "Download" sends, or null when there is nothing to send
    this.busy = false;
    parts.close.addEventListener("click", () => this.close());
    parts.download.addEventListener("click", () => this.submit());
    parts.openFile.addEventListener("click", () => parts.fileInput.click());
    parts.fileInput.addEventListener("change", () => {
      const file = parts.fileInput.files?.[0];
      if (file) this.openFile(file);
      parts.fileInput.value = "";
    });
    parts.civitaiButton.addEventListener("click", () => this.chooseCivitai(parts.url.value.trim()));
    parts.url.addEventListener("paste", (event) => this.onPaste(event));
    this.watchDrops(parts.drop);
  }

  // ---- ways in ----

  watchDrops(zone) {
    zone.addEventListener("dragover", (event) => {
      if (![...(event.dataTransfer?.types ?? [])].some((t) => t === "Files" || t === "text/plain")) return;
      event.preventDefault();
      zone.classList.add("dropping");
    });
    zone.addEventListener("dragleave", (event) => {
      if (!zone.contains(event.relatedTarget)) zone.classList.remove("dropping");
    });
    zone.addEventListener("drop", (event) => {
      zone.classList.remove("dropping");
      const file = event.dataTransfer?.files?.[0];
      const text = event.dataTransfer?.getData("text/plain") ?? "";
      if (!file && !text.trim()) return;
      event.preventDefault();
      if (file) this.openFile(file);
      else this.openText(text, null);
    });
  }

  onPaste(event) {
    const text = event.clipboardData?.getData("text/plain") ?? "";
    if (!this.isSet(text)) return; // one link: the form takes it as always
    event.preventDefault();
    this.openText(text, null);
  }

  /** Several lines, or a JSON document: a set, not one link. */
  isSet(text) {
    const trimmed = text.trim();
    return trimmed.startsWith("{") || linesOf(trimmed).length > 1;
  }

  async openFile(file) {
    if (LIST_FILE.test(file.name) || (file.type === "text/plain" && !/\.json$/i.test(file.name))) {
      this.openText(await file.text(), file.name);
      return;
    }
    await this.readWorkflow(await file.arrayBuffer(), file.name);
  }

  openText(text, filename) {
    if (text.trim().startsWith("{")) this.readWorkflow(new TextEncoder().encode(text), filename ?? "pasted.json");
    else this.showList(text, filename);
  }

  // ---- a workflow ----

  async readWorkflow(bytes, filename) {
    this.open(`Workflow: ${filename}`, "Reading the workflow…");
    const query = new URLSearchParams({ filename });
    const answer = await this.call(`api/workflows?${query}`, { method: "POST", body: bytes });
    if (!answer) return;
    const models = Array.isArray(answer.models) ? answer.models : [];
    const missing = models.filter((m) => m.status === "missing");
    const counts = countBy(models, (m) => m.status);
    setText(
      this.ui.summary,
      models.length
        ? `${models.length} models: ${Object.entries(counts).map(([s, n]) => `${n} ${(WORKFLOW_STATUS[s] ?? s).toLowerCase()}`).join(", ")}.`
        : "This workflow names no model files.",
    );
    this.table(["Model", "Folder", "Status", "Link"], models.map((m) => workflowRow(m)));
    this.request = missing.length
      ? { kind: "workflow", workflow_base64: toBase64(bytes), filename }
      : null;
    this.action(missing.length ? `Download missing (${missing.length})` : "Nothing to download");
  }

  // ---- a list of links ----

  showList(text, filename) {
    const lines = linesOf(text);
    const type = this.ui.defaultType();
    this.open(filename ? `List: ${filename}` : `${lines.length} links`, "");
    setText(
      this.ui.summary,
      `${lines.length} ${lines.length === 1 ? "link" : "links"}, downloaded as one set. ` +
        `A line may give its own type and name after the link (\`URL lora my-name.safetensors\`); ` +
        `the others are ${type}.`,
    );
    this.table(["Line", "Link"], lines.map((line, index) => [String(index + 1), line]));
    this.request = { kind: "list", text, type, ...(filename ? { name: filename } : {}) };
    this.action(`Download all (${lines.length})`);
  }

  // ---- a CivitAI version's files ----

  async chooseCivitai(url) {
    if (!url) {
      this.open("CivitAI files", "");
      this.fail("Paste a CivitAI link in the field above first.");
      return;
    }
    this.open("CivitAI files", "Asking CivitAI for the version's files…");
    const headers = {};
    const token = this.ui.tokens().civitai_token;
    if (token) headers["X-Civitai-Token"] = token; // a header, never the URL: it would be logged
    const answer = await this.call(`api/civitai/files?${new URLSearchParams({ url })}`, { headers });
    if (!answer) return;
    const version = answer.version ?? {};
    setText(this.ui.title, `${answer.model?.name ?? "CivitAI"}: ${version.name ?? ""}`.trim());
    setText(this.ui.summary, `Tick the files to download${version.base_model ? ` (${version.base_model})` : ""}.`);
    const boxes = [];
    const rows = (Array.isArray(answer.files) ? answer.files : []).map((file) => {
      const box = el("input", { type: "checkbox", "aria-label": `Download ${file.name}` });
      box.checked = file.primary === true && Boolean(file.type);
      box.disabled = !file.type;
      box.dataset.file = String(file.id);
      box.addEventListener("change", () => this.updateCivitai(url, version.id));
      boxes.push(box);
      const detail = [file.format, file.fp, file.variant].filter(Boolean).join(" · ");
      return [box, file.name, file.kind + (file.type ? "" : " (not a model file)"), detail, formatBytes(file.size)];
    });
    this.table(["", "File", "Kind", "Format", "Size"], rows);
    this.renderVersions(answer.versions, version.id, url);
    this.updateCivitai(url, version.id);
  }

  renderVersions(versions, current, url) {
    const others = (Array.isArray(versions) ? versions : []).filter((v) => v.id !== current);
    const items = others.map((v) => {
      const box = el("input", { type: "checkbox", id: `set-version-${v.id}` });
      box.dataset.version = String(v.id);
      box.addEventListener("change", () => this.updateCivitai(url, current));
      const when = typeof v.published === "string" ? ` (${v.published.slice(0, 10)})` : "";
      return el("li", {}, [box, el("label", { for: box.id, text: ` ${v.name ?? v.id}${when}` })]);
    });
    this.ui.versions.replaceChildren(
      ...(items.length ? [el("p", { class: "hint", text: "Also every model file of these versions:" }), el("ul", {}, items)] : []),
    );
    show(this.ui.versions, items.length > 0);
  }

  updateCivitai(url, current) {
    const files = [...this.ui.rows.querySelectorAll("input[data-file]:checked")].map((b) => Number(b.dataset.file));
    const others = [...this.ui.versions.querySelectorAll("input[data-version]:checked")].map((b) => Number(b.dataset.version));
    const count = files.length + others.length;
    this.request = count
      ? {
          kind: "civitai",
          url,
          files: files.length ? files : "all",
          ...(others.length ? { versions: files.length ? [current, ...others] : others } : {}),
        }
      : null;
    const what = [files.length && `${files.length} ${files.length === 1 ? "file" : "files"}`, others.length && `${others.length} more ${others.length === 1 ? "version" : "versions"}`];
    this.action(count ? `Download ${what.filter(Boolean).join(" + ")}` : "Tick a file");
  }

  // ---- the panel ----

  open(title, summary) {
    setText(this.ui.title, title);
    setText(this.ui.summary, summary);
    this.ui.head.replaceChildren();
    this.ui.rows.replaceChildren();
    this.ui.versions.replaceChildren();
    show(this.ui.versions, false);
    show(this.ui.error, false);
    this.request = null;
    this.action("Download");
    show(this.ui.panel, true);
    this.ui.panel.scrollIntoView({ block: "nearest" });
  }

  close() {
    show(this.ui.panel, false);
    this.request = null;
  }

  table(headings, rows) {
    this.ui.head.replaceChildren(...headings.map((h) => el("th", { scope: "col", text: h })));
    this.ui.rows.replaceChildren(
      ...rows.map((cells) => {
        const row = el("tr", {}, cells.map((cell) => el("td", {}, [cell ?? ""])));
        return row;
      }),
    );
  }

  action(text) {
    setText(this.ui.download, text);
    this.ui.download.disabled = !this.request || this.busy;
  }

  fail(message) {
    setText(this.ui.error, message);
    show(this.ui.error, true);
  }

  async submit() {
    if (!this.request || this.busy) return;
    this.busy = true;
    this.ui.download.disabled = true;
    const body = { ...this.request, ...this.ui.tokens() };
    const answer = await this.call("api/bundles", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    this.busy = false;
    if (!answer) {
      this.ui.download.disabled = false;
      return;
    }
    this.close();
    if (answer.bundle) this.ui.onCreated(answer.bundle);
  }

  /** A REST call; its JSON answer, or null after showing the server's reason. */
  async call(path, options) {
    const body = await callApi(path, options, (message) => this.fail(message));
    if (body) show(this.ui.error, false);
    return body;
  }
}

function workflowRow(model) {
  const status = el("span", { class: `set-status status-${model.status}`, text: WORKFLOW_STATUS[model.status] ?? model.status });
  let link = "";
  if (model.url) {
    try {
      link = new URL(model.url).hostname;
    } catch {
      link = model.url;
    }
    if (model.found_by === "civitai_hash") link += " (found by its SHA-256)";
    if (model.held_at) link += ` (in the library as ${model.held_at})`;
  } else if (model.note) link = model.note;
  if (model.status === "different" || model.status === "present") link = model.path ?? link;
  return [el("span", { class: "set-name", text: model.name }), model.directory, status, link];
}

function linesOf(text) {
  return String(text)
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith("#"));
}

function countBy(items, key) {
  const counts = {};
  for (const item of items) counts[key(item)] = (counts[key(item)] ?? 0) + 1;
  return counts;
}

function toBase64(bytes) {
  const view = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let text = "";
  for (let start = 0; start < view.length; start += 0x8000) {
    text += String.fromCharCode(...view.subarray(start, start + 0x8000));
  }
  return btoa(text);
}
