// "Installed models": the files already in each model folder, from GET /api/models.
// When the server has no such endpoint (404) the section stays hidden.

import { el, setText, show } from "./dom.js";
import { formatBytes, formatDate } from "./format.js";

export class InstalledModels {
  /**
   * @param {{section: HTMLElement, list: HTMLElement, status: HTMLElement,
   *          refresh: HTMLButtonElement, filter: HTMLInputElement,
   *          typeOrder: () => {name: string, description: string, folder: string}[]}} parts
   */
  constructor({ section, list, status, refresh, filter, typeOrder }) {
    this.section = section;
    this.list = list;
    this.status = status;
    this.filter = filter;
    this.typeOrder = typeOrder;
    this.unsupported = false;
    this.loading = false;
    this.again = false;
    this.timer = 0;
    this.models = null;
    refresh.addEventListener("click", () => this.refresh());
    filter.addEventListener("input", () => this.render());
  }

  /** Refresh soon, once, however many jobs finish together. */
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
      this.models = models;
      show(this.section, true);
      this.render();
    } catch {
      show(this.section, true);
      setText(this.status, "Could not load the installed models. Try Refresh.");
    } finally {
      this.loading = false;
      this.section.removeAttribute("aria-busy");
      if (this.again) {
        this.again = false;
        this.scheduleRefresh(0);
      }
    }
  }

  render() {
    if (!this.models) return;
    const query = this.filter.value.trim().toLowerCase();
    const known = this.typeOrder();
    const order = known.map((t) => t.name);
    for (const name of Object.keys(this.models)) if (!order.includes(name)) order.push(name);
    const groups = [];
    let files = 0;
    let shown = 0;
    for (const name of order) {
      const entries = Array.isArray(this.models[name]) ? this.models[name] : [];
      const valid = entries.filter((m) => m && typeof m.name === "string");
      files += valid.length;
      const matching = query ? valid.filter((m) => m.name.toLowerCase().includes(query)) : valid;
      if (!matching.length) continue;
      shown += matching.length;
      matching.sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true, sensitivity: "base" }));
      const type = known.find((t) => t.name === name);
      const size = valid.reduce((sum, m) => sum + (typeof m.size === "number" ? m.size : 0), 0);
      const items = matching.slice(0, 500).map((m) => {
        const details = [formatBytes(m.size), formatDate(m.modified)].filter(Boolean).join(" · ");
        return el("li", { class: "model", title: `${m.name}\n${details}` }, [
          el("span", { class: "model-name", text: m.name }),
          el("span", { class: "model-details", text: details }),
        ]);
      });
      const summary = el("summary", {}, [
        el("span", { class: "group-name", text: type?.description ?? name }),
        el("span", {
          class: "group-meta",
          text: `${type?.folder ?? name}/ · ${valid.length} ${valid.length === 1 ? "file" : "files"} · ${formatBytes(size)}`,
        }),
      ]);
      groups.push(el("details", { class: "model-group", open: true }, [summary, el("ul", { class: "model-list" }, items)]));
    }
    this.list.replaceChildren(...groups);
    if (!files) setText(this.status, "No models yet. Finished downloads appear here.");
    else if (query && !shown) setText(this.status, "No installed model matches that filter.");
    else setText(this.status, `${files} ${files === 1 ? "file" : "files"} installed.`);
  }
}
