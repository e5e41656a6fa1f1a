// The library: every model file in the models folders as a card (preview, name, type, base
// model, trigger words, size, source, badges), filtered by type, base model and text, with a
// detail view, delete with confirmation and one-click updates. Data: GET api/models; live
// changes: the server's `library` events (scan progress, files changed or removed).

import { copyText, el, setText, show } from "./dom.js";
import { formatBytes, formatDate, safeHttpUrl } from "./format.js";
import { callApi } from "./rest.js";

const SHOWN_AT_MOST = 600; // cards drawn at once; the filter narrows the rest down
const SOURCE_TEXT = { civitai: "CivitAI", huggingface: "Hugging Face", link: "Link" };

export class LibraryView {
  /**
   * @param {{section: HTMLElement, list: HTMLElement, status: HTMLElement, refresh: HTMLButtonElement,
   *          scan: HTMLButtonElement, filter: HTMLInputElement, type: HTMLSelectElement,
   *          base: HTMLSelectElement, typeOrder: () => {name: string, description: string}[],
   *          toast: (message: string, kind?: string) => void,
   *          tokens: () => {civitai_token?: string}}} parts
   */
  constructor({ section, list, status, refresh, scan, filter, type, base, typeOrder, toast, tokens }) {
    Object.assign(this, { section, list, status, filter, typeSelect: type, baseSelect: base, typeOrder, toast, tokens });
    this.unsupported = false;
    this.loading = false;
    this.again = false;
    this.timer = 0;
    this.files = null; // [{...entry, type}]
    this.summary = null;
    this.scanText = "";
    this.detail = this.buildDialog("library-detail", "Model details");
    this.confirm = this.buildConfirm();
    refresh.addEventListener("click", () => this.refresh());
    scan.addEventListener("click", () => this.startScan());
    for (const input of [filter, type, base]) input.addEventListener("input", () => this.render());
    list.addEventListener("click", (event) => this.onClick(event));
  }

  // ---------- loading ----------

  /** Refresh soon, once, however many changes arrive together. */
  scheduleRefresh(delay = 600) {
    if (this.unsupported) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refresh(), delay);
  }

  async refresh() {
    if (this.unsupported) return;
    if (this.loading) {
      this.again = true;
      return;
    }
    this.loading = true;
    this.section.setAttribute("aria-busy", "true");
    try {
      const response = await fetch("api/models", { headers: { Accept: "application/json" }, cache: "no-store" });
      if (response.status === 404) {
        this.unsupported = true;
        show(this.section, false);
        return;
      }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const body = await response.json();
      const models = body && typeof body.models === "object" && body.models !== null ? body.models : {};
      this.files = Object.entries(models).flatMap(([type, entries]) =>
        (Array.isArray(entries) ? entries : []).filter((m) => m && typeof m.name === "string").map((m) => ({ ...m, type })),
      );
      this.summary = body.library && typeof body.library === "object" ? body.library : null;
      if (this.summary && !this.summary.scan) this.scanText = "";
      show(this.section, true);
      this.render();
    } catch {
      show(this.section, true);
      setText(this.status, "Could not load the library. Try Refresh.");
    } finally {
      this.loading = false;
      this.section.removeAttribute("aria-busy");
      if (this.again) {
        this.again = false;
        this.scheduleRefresh(0);
      }
    }
  }

  /** A `library` event from the server. */
  onEvent(data) {
    if (!data || typeof data !== "object") return;
    if (data.status === "scan_started") this.showScan("Scanning the models folders…");
    else if (data.status === "scan_progress") {
      const total = Number(data.bytes_total) || 0;
      const percent = total ? Math.floor((100 * (Number(data.bytes_done) || 0)) / total) : 0;
      this.showScan(`Scanning: hashing ${data.files_done ?? 0} of ${data.files_total ?? 0} files (${percent}%)`);
    } else if (data.status === "scan_done" || data.status === "scan_failed") {
      this.scanText = "";
      this.scheduleRefresh(0);
    } else if (["changed", "removed", "updates"].includes(data.status)) this.scheduleRefresh();
  }

  showScan(text) {
    this.scanText = text;
    setText(this.status, text);
  }

  async startScan() {
    const answer = await this.call("api/models/scan", { method: "POST" });
    if (answer) this.showScan("Scanning the models folders…");
  }

  /** A request to the library's REST API; the server's own sentence on an error. */
  call(url, options) {
    return callApi(url, options, (message) => this.toast(message));
  }

  // ---------- drawing ----------

  matching() {
    const query = this.filter.value.trim().toLowerCase();
    const type = this.typeSelect.value;
    const base = this.baseSelect.value;
    return this.files.filter((m) => {
      if (type && m.type !== type) return false;
      if (base && (m.base_model || "") !== base) return false;
      if (!query) return true;
      const words = Array.isArray(m.trigger_words) ? m.trigger_words.join(" ") : "";
      return [m.path, m.title, m.version_name, words, m.sha256, m.autov2, m.base_model]
        .some((value) => typeof value === "string" && value.toLowerCase().includes(query));
    });
  }

  render() {
    if (!this.files) return;
    this.fillChoices();
    const order = this.typeOrder().map((t) => t.name);
    const rank = (type) => (order.includes(type) ? order.indexOf(type) : order.length);
    const shown = this.matching().sort(
      (a, b) => rank(a.type) - rank(b.type) || a.name.localeCompare(b.name, undefined, { numeric: true, sensitivity: "base" }),
    );
    this.list.replaceChildren(...shown.slice(0, SHOWN_AT_MOST).map((m) => this.card(m)));
    const count = this.files.length;
    if (this.scanText) setText(this.status, this.scanText);
    else if (!count) setText(this.status, "No models yet. Finished downloads and files placed in the models folder appear here.");
    else if (!shown.length) setText(this.status, "No model matches that filter.");
    else setText(this.status, this.countText(count, shown.length));
  }

  countText(count, shown) {
    const parts = [`${count} ${count === 1 ? "file" : "files"}`];
    if (shown !== count) parts.push(`${shown} shown`);
    const dupes = this.summary?.duplicates || 0;
    const updates = this.summary?.updates || 0;
    if (dupes) parts.push(`${dupes} duplicated`);
    if (updates) parts.push(`${updates} ${updates === 1 ? "update" : "updates"} available`);
    return parts.join(" · ") + ".";
  }

  fillChoices() {
    const types = this.typeOrder();
    const present = new Set(this.files.map((m) => m.type));
    const typeOptions = [...present].map((name) => [name, types.find((t) => t.name === name)?.description ?? name]);
    keepOptions(this.typeSelect, "All types", typeOptions);
    const bases = [...new Set(this.files.map((m) => m.base_model).filter((b) => typeof b === "string" && b))].sort();
    keepOptions(this.baseSelect, "All base models", bases.map((b) => [b, b]));
  }

  card(m) {
    const placeholder = () => el("div", { class: "library-preview empty", "aria-hidden": "true", text: initials(m) });
    let preview = placeholder();
    if (typeof m.preview === "string" && m.preview.startsWith("api/models/preview?")) {
      preview = el("img", { class: "library-preview", src: m.preview, alt: "", loading: "lazy", decoding: "async" });
      preview.addEventListener("error", () => preview.replaceWith(placeholder()), { once: true });
    }
    const badges = [];
    if (m.update) badges.push(el("span", { class: "badge update", text: `Update: ${m.update.latest_version_name || m.update.latest_version_id}` }));
    if (Array.isArray(m.duplicates) && m.duplicates.length) {
      badges.push(el("span", { class: "badge duplicate", title: m.duplicates.join("\n"), text: `Duplicate: ${m.duplicates.length + 1} copies` }));
    }
    if (!m.sha256) badges.push(el("span", { class: "badge pending", text: "Not hashed yet" }));
    const words = Array.isArray(m.trigger_words) ? m.trigger_words.filter((w) => typeof w === "string") : [];
    const type = this.typeOrder().find((t) => t.name === m.type);
    const meta = [type?.description ?? m.type, m.base_model, formatBytes(m.size)].filter(Boolean);
    const link = safeHttpUrl(m.source_url);
    const actions = [
      el("button", { class: "button ghost small", type: "button", "data-library": "details", text: "Details" }),
      m.update ? el("button", { class: "button small", type: "button", "data-library": "update", text: "Get update" }) : null,
      el("button", { class: "button ghost small danger", type: "button", "data-library": "delete", text: "Delete" }),
    ];
    const shown = preview.tagName === "IMG" ? m.preview : null;
    return el("li", { class: "library-card", "data-path": m.path, "data-type": m.type, "data-preview": shown }, [
      preview,
      el("div", { class: "library-body" }, [
        m.title ? el("h3", { class: "library-title", text: m.title }) : null,
        el("p", { class: "model-name", title: m.path, text: m.name }),
        el("p", { class: "library-meta", text: meta.join(" · ") }),
        badges.length ? el("p", { class: "library-badges" }, badges) : null,
        words.length
          ? el("p", { class: "library-words" }, words.slice(0, 12).map((word) =>
            el("button", { class: "trigger", type: "button", "data-library": "copy", "data-word": word, title: "Copy", text: word })))
          : null,
        link
          ? el("a", { class: "library-source", href: link, target: "_blank", rel: "noopener noreferrer", text: SOURCE_TEXT[m.source?.kind] ?? "Source" })
          : null,
        el("div", { class: "library-actions" }, actions),
      ]),
    ]);
  }

  // ---------- acting ----------

  async onClick(event) {
    const button = event.target.closest("[data-library]");
    if (!button) return;
    const path = button.closest("[data-path]")?.dataset.path;
    const model = this.files?.find((m) => m.path === path);
    if (!model) return;
    const action = button.dataset.library;
    if (action === "copy") {
      const copied = await copyText(button.dataset.word);
      this.toast(copied ? `Copied “${button.dataset.word}”` : "Could not copy.", copied ? "ok" : "error");
    } else if (action === "details") this.showDetail(model);
    else if (action === "delete") this.askDelete(model);
    else if (action === "update") {
      const answer = await this.call("api/models/update", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ path: model.path, ...this.tokens() }),
      });
      if (answer?.job) this.toast(`Downloading ${answer.job.label}`, "ok");
    }
  }

  showDetail(m) {
    const rows = [
      ["Path", m.path],
      ["Type", m.type],
      ["Size", formatBytes(m.size)],
      ["Modified", formatDate(m.modified)],
      ["Model", m.title],
      ["Version", m.version_name],
      ["Base model", m.base_model],
      ["SHA-256", m.sha256],
      ["AutoV2", m.autov2],
      ["Source", m.source ? Object.entries(m.source).map(([k, v]) => `${k}: ${v}`).join(", ") : null],
      ["CivitAI look-up", m.civitai],
      ["Trigger words", Array.isArray(m.trigger_words) ? m.trigger_words.join(", ") : null],
      ["Other copies", Array.isArray(m.duplicates) ? m.duplicates.join("\n") : null],
      ["Update", m.update ? `${m.update.latest_version_name || m.update.latest_version_id} (${m.update.latest_published_at || "date unknown"})` : null],
      ["Problems", Array.isArray(m.problems) ? m.problems.join("\n") : null],
    ].filter(([, value]) => value !== null && value !== undefined && value !== "");
    const list = el("dl", { class: "library-record" }, rows.flatMap(([key, value]) => [el("dt", { text: key }), el("dd", { text: value })]));
    this.detail.body.replaceChildren(list);
    this.detail.title.textContent = m.title || m.name;
    this.detail.dialog.showModal();
  }

  askDelete(m) {
    this.confirm.text.textContent = `Delete ${m.path} and the files beside it that describe it? This cannot be undone.`;
    this.confirm.pending = m.path;
    this.confirm.dialog.showModal();
  }

  async deleteConfirmed() {
    const path = this.confirm.pending;
    this.confirm.dialog.close();
    if (!path) return;
    const answer = await this.call(`api/models?path=${encodeURIComponent(path)}`, { method: "DELETE" });
    if (!answer) return;
    this.files = this.files.filter((m) => m.path !== path);
    this.render();
    this.toast(`Deleted ${path}`, "ok");
    this.scheduleRefresh();
  }

  buildDialog(id, label) {
    const title = el("h2", { id: `${id}-title`, text: label });
    const body = el("div", { class: "library-dialog-body" });
    const close = el("button", { class: "button ghost small", type: "button", text: "Close" });
    const dialog = el("dialog", { id, class: "library-dialog", "aria-labelledby": `${id}-title` }, [
      el("div", { class: "library-dialog-head" }, [title, close]),
      body,
    ]);
    close.addEventListener("click", () => dialog.close());
    document.body.append(dialog);
    return { dialog, title, body };
  }

  buildConfirm() {
    const text = el("p", { id: "library-confirm-text" });
    const yes = el("button", { id: "library-confirm-delete", class: "button danger", type: "button", text: "Delete" });
    const no = el("button", { id: "library-confirm-cancel", class: "button ghost", type: "button", text: "Cancel" });
    const dialog = el("dialog", { id: "library-confirm", class: "library-dialog", "aria-describedby": "library-confirm-text" }, [
      text,
      el("div", { class: "library-actions" }, [no, yes]),
    ]);
    const confirm = { dialog, text, pending: null };
    no.addEventListener("click", () => {
      confirm.pending = null;
      dialog.close();
    });
    yes.addEventListener("click", () => this.deleteConfirmed());
    document.body.append(dialog);
    return confirm;
  }
}

/** Keep a select's options in line with `pairs` ([value, label]), keeping the choice made. */
function keepOptions(select, allLabel, pairs) {
  const chosen = select.value;
  const wanted = [["", allLabel], ...pairs];
  const same = select.options.length === wanted.length && wanted.every(([value], i) => select.options[i].value === value);
  if (same) return;
  select.replaceChildren(...wanted.map(([value, label]) => el("option", { value, text: label })));
  select.value = wanted.some(([value]) => value === chosen) ? chosen : "";
}

function initials(m) {
  return (m.title || m.name || "?").replace(/[^\p{L}\p{N}]/gu, "").slice(0, 2).toUpperCase() || "?";
}
