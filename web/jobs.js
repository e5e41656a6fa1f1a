// The job list: one card per job, keyed by job id, updated in place.
// Events only mark cards dirty; the DOM is touched at most once per frame per card,
// so fifty busy downloads cost fifty small updates a second, not fifty list rebuilds.

import { actionButtons, progressBar, showProgress } from "./card.js";
import { el, setAttr, setText, show } from "./dom.js";
import {
  FINISHED_STATES,
  STATE_TEXT,
  formatBytes,
  formatEta,
  formatRate,
  isObject,
  nameFromUrl,
  toPercent,
} from "./format.js";
import { renderJobInfo } from "./job_info.js";
import { sourceText } from "./vocabulary.js";

const ACTION_TEXT = { pause: "Pause", resume: "Resume", cancel: "Cancel", retry: "Retry" };
const ACTION_ORDER = ["pause", "resume", "cancel", "retry"];
// An action button stays busy until the job changes, or this long at most.
const BUSY_LIMIT = 6000;
// Fields a job object or event may carry that the card keeps.
const JOB_FIELDS = [
  "url", "type", "folder", "state", "label", "filename", "source", "engine", "progress",
  "downloaded", "total", "rate", "eta", "sha256", "path", "created", "updated", "size", "actions",
  "verified", "bundle", "compared",
];
let cardCounter = 0;

export class JobList {
  /**
   * @param {HTMLElement} list the <ul id="jobs">
   * @param {{onAction: (action: string, jobId: string) => void,
   *          describeType: (name: string) => string,
   *          onChange: () => void}} options
   */
  constructor(list, { onAction, onVerify, describeType, onChange, inBundle, onRendered }) {
    this.list = list;
    // a bundle's files are drawn inside the bundle's card, not as cards of their own
    this.inBundle = inBundle ?? (() => false);
    this.onRendered = onRendered ?? (() => {});
    this.onAction = onAction;
    this.onVerify = onVerify;
    this.describeType = describeType;
    this.onChange = onChange;
    this.cards = new Map(); // job id -> card record
    this.dirty = new Set();
    this.frame = 0;
    this.cleared = new Set(); // job ids hidden by "Clear finished"
    this.showCleared = false;
    try {
      for (const id of JSON.parse(sessionStorage.getItem("sd-cleared-jobs") ?? "[]")) {
        if (typeof id === "string") this.cleared.add(id);
      }
    } catch {
      // storage may be unavailable or hold junk: start empty
    }
  }

  get size() {
    return this.cards.size;
  }

  job(jobId) {
    return this.cards.get(jobId)?.job;
  }

  /** Rebuild from a full job list (the hello message), keeping existing cards. */
  replaceAll(jobs) {
    const seen = new Set();
    const ordered = [];
    for (const job of Array.isArray(jobs) ? jobs : []) {
      if (!job || typeof job.id !== "string" || seen.has(job.id)) continue;
      seen.add(job.id);
      const card = this.cards.get(job.id) ?? this.create(job.id, job);
      card.job = normalise({ id: job.id }, job);
      card.info = isObject(job.metadata) && Object.keys(job.metadata).length ? job.metadata : card.info;
      card.infoDirty = true;
      this.markDirty(job.id);
      ordered.push(card);
    }
    for (const [id, card] of this.cards) {
      if (!seen.has(id)) {
        card.root.remove();
        this.cards.delete(id);
      }
    }
    // Newest first.
    ordered.sort((a, b) => (b.job.created ?? 0) - (a.job.created ?? 0));
    ordered.forEach((card, index) => {
      if (this.list.children[index] !== card.root) {
        this.list.insertBefore(card.root, this.list.children[index] ?? null);
      }
    });
    this.flushNow();
  }

  /** Apply one `download` event of a job. Returns the card's job model. */
  applyEvent(jobId, data) {
    let card = this.cards.get(jobId);
    if (!card) {
      card = this.create(jobId, data);
      card.job.created = Date.now() / 1000;
      this.list.prepend(card.root);
    }
    const job = card.job;
    normalise(job, data);
    switch (data.status) {
      case "success":
        job.progress = 1;
        if (typeof data.size === "number") {
          job.total = data.size;
          job.downloaded = data.size;
        }
        job.alreadyPresent = data.already_present === true;
        job.compared = typeof data.compared === "string" ? data.compared : null;
        break;
      case "error":
        job.error = { code: data.code ?? null, message: data.message ?? "The download failed." };
        break;
      case "cancelled":
        job.error = null;
        job.note = typeof data.message === "string" ? data.message : "";
        job.rate = null;
        job.eta = null;
        break;
      case "metadata":
        if (isObject(data.info)) {
          card.info = { ...(card.info ?? {}), ...data.info };
          card.infoDirty = true;
        }
        break;
      case "queued":
      case "paused":
        job.rate = null;
        job.eta = null;
        break;
      default:
        break;
    }
    if (job.state !== "failed") job.error = null;
    if (job.state !== "cancelled") job.note = "";
    if (job.state && !FINISHED_STATES.has(job.state)) this.restore(jobId);
    this.markDirty(jobId);
    return job;
  }

  /** Hide completed, cancelled and failed cards (this browser only). */
  clearFinished() {
    let count = 0;
    for (const [id, card] of this.cards) {
      if (FINISHED_STATES.has(card.job.state) && !this.cleared.has(id)) {
        this.cleared.add(id);
        count += 1;
        this.markDirty(id);
      }
    }
    this.showCleared = false;
    this.saveCleared();
    this.flushNow();
    return count;
  }

  toggleShowCleared() {
    this.showCleared = !this.showCleared;
    for (const id of this.cleared) if (this.cards.has(id)) this.markDirty(id);
    this.flushNow();
  }

  /** A cleared job that became active again (retried) shows up again. */
  restore(jobId) {
    if (this.cleared.delete(jobId)) this.saveCleared();
  }

  saveCleared() {
    try {
      sessionStorage.setItem("sd-cleared-jobs", JSON.stringify([...this.cleared].slice(-1000)));
    } catch {
      // not fatal
    }
  }

  counts() {
    let active = 0;
    let finished = 0;
    let cleared = 0;
    let visible = 0;
    let done = 0;
    let total = 0;
    for (const [id, card] of this.cards) {
      const state = card.job.state;
      if (FINISHED_STATES.has(state)) finished += 1;
      else {
        active += 1;
        if (typeof card.job.total === "number" && card.job.total > 0) {
          total += card.job.total;
          done += Math.min(card.job.downloaded ?? 0, card.job.total);
        }
      }
      if (this.cleared.has(id)) cleared += 1;
      if (!card.root.hidden) visible += 1;
    }
    return { active, finished, cleared, visible, overall: total > 0 ? done / total : null };
  }

  /** The card element of a job, for scrolling to it. */
  element(jobId) {
    return this.cards.get(jobId)?.root ?? null;
  }

  markBusy(jobId, action, busy) {
    const card = this.cards.get(jobId);
    if (!card) return;
    const button = card.buttons[action];
    if (!button) return;
    clearTimeout(card.busyTimer);
    if (busy) {
      button.setAttribute("aria-disabled", "true");
      card.busy = action;
      card.busyTimer = setTimeout(() => this.markBusy(jobId, action, false), BUSY_LIMIT);
    } else {
      for (const other of Object.values(card.buttons)) other.removeAttribute("aria-disabled");
      card.busy = null;
    }
  }

  // ---- building and updating cards ----

  create(jobId, data) {
    cardCounter += 1;
    const uid = `job-${cardCounter}`;
    const label = el("h3", { class: "job-label", id: `${uid}-label` });
    const badge = el("span", { class: "job-state" });
    const source = el("span", { class: "job-source" });
    const type = el("span", { class: "job-type" });
    const { bar, fill } = progressBar(`${uid}-label`);
    const percent = el("span", { class: "job-percent" });
    const amount = el("span", { class: "job-amount" });
    const rate = el("span", { class: "job-rate" });
    const eta = el("span", { class: "job-eta" });
    const message = el("p", { class: "job-message", hidden: true });
    const pathText = el("code", { class: "job-path-value" });
    const path = el("p", { class: "job-path", hidden: true }, [
      el("span", { class: "job-path-label", text: "Saved to " }),
      pathText,
    ]);
    const info = el("div", { class: "job-info", hidden: true });
    const { actions, buttons } = actionButtons(ACTION_ORDER, ACTION_TEXT, (action, button) => {
      const card = this.cards.get(jobId);
      if (!card || card.busy || button.getAttribute("aria-disabled") === "true") return;
      this.markBusy(jobId, action, true);
      this.onAction(action, jobId);
    });
    // a file taken as present for its name and size alone: offer the byte-for-byte comparison
    const verify = el("button", {
      type: "button",
      class: "button small action-verify",
      "data-verify": "",
      text: "Compare bytes",
      hidden: true,
    });
    verify.addEventListener("click", () => {
      const card = this.cards.get(jobId);
      if (card && this.onVerify) this.onVerify(card.job);
    });
    actions.append(verify);
    const root = el("li", { class: "job", "data-job": jobId, "data-state": "queued" }, [
      el("article", { class: "job-card", "aria-labelledby": `${uid}-label` }, [
        el("div", { class: "job-head" }, [label, badge]),
        el("p", { class: "job-sub" }, [source, el("span", { class: "dot", "aria-hidden": "true", text: "·" }), type]),
        bar,
        el("div", { class: "job-foot" }, [el("p", { class: "job-stats" }, [percent, amount, rate, eta]), actions]),
        message,
        path,
        info,
      ]),
    ]);
    label.tabIndex = -1; // focus lands here when the focused button disappears
    const card = {
      id: jobId,
      root,
      verify,
      job: normalise({ id: jobId, state: "queued", progress: 0 }, data ?? {}),
      info: null,
      infoDirty: false,
      busy: null,
      busyTimer: 0,
      refs: { label, badge, source, type, bar, fill, percent, amount, rate, eta, message, path, pathText, info },
      buttons,
    };
    this.cards.set(jobId, card);
    return card;
  }

  /** Re-render every card (e.g. once the type names are known). */
  markAllDirty() {
    for (const id of this.cards.keys()) this.markDirty(id);
  }

  markDirty(jobId) {
    this.dirty.add(jobId);
    if (!this.frame) {
      this.frame = requestAnimationFrame(() => this.flush());
      // Background tabs get no animation frames; make sure updates still land.
      this.fallbackTimer = setTimeout(() => this.flush(), 250);
    }
  }

  flushNow() {
    this.flush();
  }

  flush() {
    if (this.frame) cancelAnimationFrame(this.frame);
    clearTimeout(this.fallbackTimer);
    this.frame = 0;
    const ids = [...this.dirty];
    this.dirty.clear();
    for (const id of ids) {
      const card = this.cards.get(id);
      if (card) this.render(card);
    }
    if (ids.length) this.onChange();
  }

  render(card) {
    const { job } = card;
    const state = STATE_TEXT[job.state] ? job.state : "queued";
    const previousState = card.root.dataset.state;
    setAttr(card.root, "data-state", state);
    const label = displayLabel(job);
    this.renderHead(card, label);
    renderProgress(card.refs, job, state);
    renderOutcome(card, state);
    if (card.infoDirty) {
      card.infoDirty = false;
      renderJobInfo(card.refs.info, card.info);
    }
    this.renderActions(card, state, label);
    if (previousState !== state && card.busy) this.markBusy(card.id, card.busy, false);
    const cleared = this.cleared.has(card.id) && FINISHED_STATES.has(state);
    const bundled = Boolean(job.bundle) || this.inBundle(card.id);
    show(card.root, (!cleared || this.showCleared) && !bundled);
    this.onRendered(card.id);
  }

  renderHead({ job, refs }, label) {
    setText(refs.label, label);
    refs.label.title = label;
    setText(refs.source, sourceText(job.source, job.url));
    refs.source.title = job.url ?? "";
    setText(refs.type, this.describeType(job.type));
  }

  /** The buttons the server says fit the job now (the page keeps no rules of its own). */
  renderActions({ job, refs, buttons }, state, label) {
    const focused = document.activeElement;
    let lostFocus = false;
    for (const action of ACTION_ORDER) {
      const button = buttons[action];
      const visible = Array.isArray(job.actions) && job.actions.includes(action);
      if (!visible && focused === button) lostFocus = true;
      show(button, visible);
      // cancelling a failed job only removes the partial data it kept for a retry
      const text = action === "cancel" && state === "failed" ? "Discard" : ACTION_TEXT[action];
      setText(button, text);
      setAttr(button, "aria-label", `${text} ${label}`);
    }
    if (lostFocus) {
      const next = ACTION_ORDER.map((a) => buttons[a]).find((b) => !b.hidden);
      (next ?? refs.label).focus();
    }
  }
}

/** The bar, the percentage, the amount, the rate and the ETA. */
function renderProgress(refs, job, state) {
  const percent = state === "completed" ? 100 : toPercent(job.progress);
  const unknownSize = !(typeof job.total === "number" && job.total > 0);
  showProgress(refs.bar, refs.fill, percent, STATE_TEXT[state]);
  refs.bar.classList.toggle("indeterminate", unknownSize && state === "downloading" && percent === 0);
  setText(refs.percent, `${percent}%`);
  showText(refs.amount, amountText(job, state, unknownSize));
  showText(refs.rate, state === "downloading" ? formatRate(job.rate) : "");
  const eta = state === "downloading" ? formatEta(job.eta) : "";
  showText(refs.eta, eta ? `ETA ${eta}` : "");
}

function amountText(job, state, unknownSize) {
  if (state === "completed") return unknownSize ? formatBytes(job.downloaded) : formatBytes(job.total);
  if (!unknownSize) return `${formatBytes(job.downloaded ?? 0)} / ${formatBytes(job.total)}`;
  return typeof job.downloaded === "number" && job.downloaded > 0 ? `${formatBytes(job.downloaded)} of unknown size` : "";
}

/** The state badge, the message under the bar, where the file is, and "Compare bytes". */
function renderOutcome(card, state) {
  const { job, refs } = card;
  let stateText = STATE_TEXT[state];
  if (state === "completed" && job.alreadyPresent) stateText = "Already present";
  const sizeOnly = state === "completed" && job.alreadyPresent && job.compared === "name and size";
  show(card.verify, sizeOnly);
  // a finished file is checked against its published SHA-256 (the bytes read so far)
  const checking = (state === "downloading" || state === "verifying") && typeof job.verified === "number";
  if (checking) {
    const share = job.total > 0 ? ` ${toPercent(job.verified / job.total)}%` : "";
    stateText = `Verifying${share}`;
  }
  setText(refs.badge, stateText);

  let message = "";
  if (state === "failed") message = job.error?.message || "The download failed.";
  else if (state === "cancelled") message = job.note || "";
  else if (sizeOnly) message = "A file of this name and size was already there; its bytes were not compared.";
  showText(refs.message, message);
  refs.message.classList.toggle("error", state === "failed");

  const path = state === "completed" && job.path ? job.path : "";
  setText(refs.pathText, path);
  setText(refs.path.firstChild, job.alreadyPresent ? "Already in " : "Saved to ");
  show(refs.path, path !== "");
}

function showText(node, text) {
  setText(node, text);
  show(node, text !== "");
}

/** The file name, or the last part of the link until the server has named the file. */
export function displayLabel(job) {
  const label = job.label || job.filename || "";
  if (label && label !== job.url) return label;
  return nameFromUrl(job.url) || job.id || "";
}

/** Copy the known fields of a job object or event into a card model. */
function normalise(target, source) {
  if (!isObject(source)) return target;
  for (const key of JOB_FIELDS) {
    if (!(key in source)) continue;
    const value = source[key];
    if (value === undefined) continue;
    target[key] = value;
  }
  if ("error" in source && source.status === undefined) {
    target.error = isObject(source.error) ? source.error : null;
  }
  if (source.path && typeof source.path === "string") target.path = source.path;
  if (typeof source.already_present === "boolean") target.alreadyPresent = source.already_present;
  return target;
}
