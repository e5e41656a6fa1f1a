// Bundles: a set of files asked for as one (a workflow's missing models, a Hugging Face folder,
// a list of links, chosen CivitAI files). One card per bundle with its files inside; the files'
// own cards stay out of the job list. The server sums the bundle up (docs/PROTOCOL.md, Bundles);
// the page only draws what it is told.

import { actionButtons, progressBar, showProgress } from "./card.js";
import { el, setAttr, setText, show } from "./dom.js";
import { STATE_TEXT, formatBytes, formatEta, formatRate, toPercent } from "./format.js";

const ACTION_TEXT = { pause: "Pause all", resume: "Resume all", retry: "Retry failed", cancel: "Cancel all" };
const ACTION_ORDER = ["pause", "resume", "retry", "cancel"];
const BUNDLE_STATE_TEXT = { ...STATE_TEXT, installing: "Putting in place" };
const KIND_TEXT = {
  workflow: "ComfyUI workflow",
  hf_folder: "Hugging Face folder",
  list: "List of links",
  civitai: "CivitAI files",
};
const ENTRY_TEXT = { present: "already in place", no_link: "no link", different: "a different file is there" };
const FINISHED = new Set(["completed", "failed", "cancelled"]);

let counter = 0;

export class BundleList {
  /**
   * @param {HTMLElement} list the <ul id="bundles">
   * @param {{onAction: (action: string, bundleId: string) => void,
   *          job: (jobId: string) => object | undefined,
   *          onChange: () => void}} options
   */
  constructor(list, { onAction, job, onChange }) {
    this.list = list;
    this.onAction = onAction;
    this.jobOf = job;
    this.onChange = onChange;
    this.cards = new Map(); // bundle id -> card
    this.owner = new Map(); // job id -> bundle id
  }

  get size() {
    return this.cards.size;
  }

  /** The bundle a job belongs to, if any. */
  bundleOf(jobId) {
    return this.owner.get(jobId);
  }

  replaceAll(bundles) {
    const seen = new Set();
    for (const bundle of Array.isArray(bundles) ? bundles : []) {
      if (!bundle || typeof bundle.id !== "string") continue;
      seen.add(bundle.id);
      this.apply(bundle);
    }
    for (const id of [...this.cards.keys()]) if (!seen.has(id)) this.remove(id);
  }

  /** One `bundle` message's data (the bundle as the server sums it up). */
  apply(data) {
    if (!data || typeof data.id !== "string") return;
    if (data.status === "removed") {
      this.remove(data.id);
      return;
    }
    let card = this.cards.get(data.id);
    if (!card) {
      card = this.create(data.id);
      this.list.prepend(card.root);
    }
    card.bundle = data;
    for (const jobId of Array.isArray(data.jobs) ? data.jobs : []) this.owner.set(jobId, data.id);
    this.render(card);
    this.onChange();
  }

  /** A job of some bundle changed: redraw that bundle's file rows. */
  jobChanged(jobId) {
    const card = this.cards.get(this.owner.get(jobId));
    if (card) this.renderFiles(card);
  }

  remove(bundleId) {
    const card = this.cards.get(bundleId);
    if (!card) return;
    card.root.remove();
    this.cards.delete(bundleId);
    this.onChange();
  }

  element(bundleId) {
    return this.cards.get(bundleId)?.root ?? null;
  }

  counts() {
    let active = 0;
    for (const card of this.cards.values()) if (!FINISHED.has(card.bundle?.state)) active += 1;
    return { active, total: this.cards.size };
  }

  create(bundleId) {
    counter += 1;
    const uid = `bundle-${counter}`;
    const refs = {
      label: el("h3", { class: "job-label", id: `${uid}-label` }),
      badge: el("span", { class: "job-state" }),
      kind: el("span", { class: "job-source" }),
      counts: el("span", { class: "job-type" }),
      percent: el("span", { class: "job-percent" }),
      amount: el("span", { class: "job-amount" }),
      rate: el("span", { class: "job-rate" }),
      eta: el("span", { class: "job-eta" }),
      message: el("p", { class: "job-message", hidden: true }),
      place: el("p", { class: "job-path", hidden: true }),
      files: el("ul", { class: "bundle-files" }),
      notes: el("ul", { class: "bundle-notes", hidden: true }),
      summary: el("summary"),
    };
    Object.assign(refs, progressBar(`${uid}-label`));
    const { actions, buttons } = actionButtons(ACTION_ORDER, ACTION_TEXT, (action) =>
      this.onAction(action, bundleId),
    );
    const details = el("details", { class: "bundle-details" }, [refs.summary, refs.files]);
    const root = el("li", { class: "job bundle", "data-bundle": bundleId, "data-state": "queued" }, [
      el("article", { class: "job-card", "aria-labelledby": `${uid}-label` }, [
        el("div", { class: "job-head" }, [refs.label, refs.badge]),
        el("p", { class: "job-sub" }, [
          refs.kind,
          el("span", { class: "dot", "aria-hidden": "true", text: "·" }),
          refs.counts,
        ]),
        refs.bar,
        el("div", { class: "job-foot" }, [
          el("p", { class: "job-stats" }, [refs.percent, refs.amount, refs.rate, refs.eta]),
          actions,
        ]),
        refs.message,
        refs.place,
        refs.notes,
        details,
      ]),
    ]);
    const card = { id: bundleId, root, refs, buttons, bundle: null };
    this.cards.set(bundleId, card);
    return card;
  }

  render(card) {
    const { bundle, refs, buttons } = card;
    const state = BUNDLE_STATE_TEXT[bundle.state] ? bundle.state : "queued";
    setAttr(card.root, "data-state", state);
    setText(refs.label, bundle.name || "Files");
    setText(refs.badge, BUNDLE_STATE_TEXT[state]);
    setText(refs.kind, KIND_TEXT[bundle.kind] ?? bundle.kind ?? "");
    const counts = bundle.counts ?? {};
    const total = Number(counts.total) || 0;
    const done = Number(counts.completed) || 0;
    setText(refs.counts, `${done} of ${total} ${total === 1 ? "file" : "files"} in place`);

    const percent = state === "completed" ? 100 : toPercent(bundle.progress);
    showProgress(refs.bar, refs.fill, percent, BUNDLE_STATE_TEXT[state]);
    setText(refs.percent, `${percent}%`);
    const amount = typeof bundle.total === "number" && bundle.total > 0
      ? `${formatBytes(Math.min(bundle.downloaded ?? 0, bundle.total))} / ${formatBytes(bundle.total)}`
      : formatBytes(bundle.downloaded ?? 0);
    setText(refs.amount, amount);
    const moving = state === "downloading";
    setText(refs.rate, moving ? formatRate(bundle.rate) : "");
    show(refs.rate, moving);
    const eta = moving ? formatEta(bundle.eta) : "";
    setText(refs.eta, eta ? `ETA ${eta}` : "");
    show(refs.eta, eta !== "");

    const failures = Array.isArray(bundle.failed) ? bundle.failed : [];
    let message = "";
    if (bundle.error?.message) message = bundle.error.message;
    else if (failures.length) {
      message = `${failures.length} of ${total} failed: ${failures.map((f) => `${f.label}: ${f.message}`).join("; ")}`;
    }
    setText(refs.message, message);
    refs.message.classList.toggle("error", state === "failed");
    show(refs.message, message !== "");

    const place = state === "completed" && bundle.destination ? `In place in ${bundle.destination}` : "";
    setText(refs.place, place);
    show(refs.place, place !== "");

    const entries = Array.isArray(bundle.entries) ? bundle.entries : [];
    refs.notes.replaceChildren(
      ...entries.map((entry) =>
        el("li", { class: `bundle-note note-${entry.status}` }, [
          el("strong", { text: entry.name }),
          ` ${ENTRY_TEXT[entry.status] ?? entry.status}${entry.note ? `: ${entry.note}` : ""}`,
        ]),
      ),
    );
    show(refs.notes, entries.length > 0);

    for (const action of ACTION_ORDER) {
      const visible = Array.isArray(bundle.actions) && bundle.actions.includes(action);
      show(buttons[action], visible);
      setAttr(buttons[action], "aria-label", `${ACTION_TEXT[action]} of ${bundle.name || "this set"}`);
    }
    this.renderFiles(card);
  }

  renderFiles(card) {
    const jobs = Array.isArray(card.bundle?.jobs) ? card.bundle.jobs : [];
    setText(card.refs.summary, `Files (${jobs.length})`);
    const rows = jobs.map((jobId) => {
      const job = this.jobOf(jobId) ?? { state: "queued" };
      const state = STATE_TEXT[job.state] ? job.state : "queued";
      const name = job.filename || job.label || job.url || jobId;
      const percent = state === "completed" ? 100 : toPercent(job.progress);
      const problem = state === "failed" ? job.error?.message || "Failed." : "";
      return el("li", { class: "bundle-file", "data-job": jobId, "data-state": state }, [
        el("span", { class: "bundle-file-name", text: name, title: job.path || name }),
        el("span", { class: "bundle-file-state", text: `${STATE_TEXT[state]}${state === "downloading" ? ` ${percent}%` : ""}` }),
        problem ? el("span", { class: "bundle-file-error", text: problem }) : null,
      ]);
    });
    card.refs.files.replaceChildren(...rows);
  }
}
