// The job list: one card per job, keyed by job id, updated in place.
// Events only mark cards dirty; the DOM is touched at most once per frame per card,
// so fifty busy downloads cost fifty small updates a second, not fifty list rebuilds.

import { actionButtons, progressBar, showProgress } from "./card.js";
import { copyText, el, setAttr, setText, show } from "./dom.js";
import {
  FINISHED_STATES,
  STATE_TEXT,
  formatBytes,
  formatEta,
  formatRate,
  humanKey,
  nameFromUrl,
  safeHttpUrl,
  toPercent,
} from "./format.js";
import { civitaiModelPage, sourceText } from "./vocabulary.js";

const ACTION_TEXT = { pause: "Pause", resume: "Resume", cancel: "Cancel", retry: "Retry" };
const ACTION_ORDER = ["pause", "resume", "cancel", "retry"];
// An action button stays busy until the job changes, or this long at most.
const BUSY_LIMIT = 6000;
// Fields a job object or event may carry that the card keeps.
const JOB_FIELDS = [
  "url", "type", "folder", "state", "label", "filename", "source", "engine", "progress",
  "downloaded", "total", "rate", "eta", "sha256", "path", "created", "updated", "size", "actions",
  "verified", "bundle",
];
// Metadata fields shown in their own way, or never shown.
const META_SPECIAL = new Set([
  "preview_url", "model_name", "version_name", "base_model", "trained_words", "images",
  "description", "file", "warnings",
]);
const META_HIDDEN = /token|secret|password|authorization|cookie/i;
// Already on the card (the source line shows the host), or only useful to programs.
const META_SKIP = new Set([
  "host", "url", "label", "filename", "file_name", "type", "model_id", "version_id", "civitai",
]);
const META_NAMES = { nsfw: "NSFW", sha256: "SHA-256", model_type: "Kind", content_type: "Content type" };

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
    const { job, refs, buttons } = card;
    const state = STATE_TEXT[job.state] ? job.state : "queued";
    const previousState = card.root.dataset.state;
    setAttr(card.root, "data-state", state);

    const label = displayLabel(job);
    setText(refs.label, label);
    refs.label.title = label;
    setText(refs.source, sourceText(job.source, job.url));
    refs.source.title = job.url ?? "";
    setText(refs.type, this.describeType(job.type));

    const percent = state === "completed" ? 100 : toPercent(job.progress);
    const unknownSize = !(typeof job.total === "number" && job.total > 0);
    showProgress(refs.bar, refs.fill, percent, STATE_TEXT[state]);
    refs.bar.classList.toggle("indeterminate", unknownSize && state === "downloading" && percent === 0);

    setText(refs.percent, `${percent}%`);
    let amount;
    if (state === "completed") amount = unknownSize ? formatBytes(job.downloaded) : formatBytes(job.total);
    else if (unknownSize) amount = typeof job.downloaded === "number" && job.downloaded > 0 ? `${formatBytes(job.downloaded)} of unknown size` : "";
    else amount = `${formatBytes(job.downloaded ?? 0)} / ${formatBytes(job.total)}`;
    setText(refs.amount, amount);
    show(refs.amount, amount !== "");
    const rate = state === "downloading" ? formatRate(job.rate) : "";
    setText(refs.rate, rate);
    show(refs.rate, rate !== "");
    const eta = state === "downloading" ? formatEta(job.eta) : "";
    setText(refs.eta, eta ? `ETA ${eta}` : "");
    show(refs.eta, eta !== "");

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
    if (state === "failed") {
      message = job.error?.message || "The download failed.";
    } else if (state === "cancelled") {
      message = job.note || "";
    } else if (sizeOnly) {
      message = "A file of this name and size was already there; its bytes were not compared.";
    }
    setText(refs.message, message);
    refs.message.classList.toggle("error", state === "failed");
    show(refs.message, message !== "");

    const path = state === "completed" && job.path ? job.path : "";
    setText(refs.pathText, path);
    setText(refs.path.firstChild, job.alreadyPresent ? "Already in " : "Saved to ");
    show(refs.path, path !== "");

    if (card.infoDirty) {
      card.infoDirty = false;
      this.renderInfo(card);
    }

    const focused = document.activeElement;
    let lostFocus = false;
    for (const action of ACTION_ORDER) {
      const button = buttons[action];
      // the server says what fits the job now; the page keeps no rules of its own
      const visible = Array.isArray(job.actions) && job.actions.includes(action);
      if (!visible && focused === button) lostFocus = true;
      show(button, visible);
      // cancelling a failed job only removes the partial data it kept for a retry
      const text = action === "cancel" && state === "failed" ? "Discard" : ACTION_TEXT[action];
      setText(button, text);
      setAttr(button, "aria-label", `${text} ${label}`);
    }
    if (previousState !== state && card.busy) this.markBusy(card.id, card.busy, false);
    if (lostFocus) {
      const next = ACTION_ORDER.map((a) => buttons[a]).find((b) => !b.hidden);
      (next ?? refs.label).focus();
    }

    const cleared = this.cleared.has(card.id) && FINISHED_STATES.has(state);
    const bundled = Boolean(job.bundle) || this.inBundle(card.id);
    show(card.root, (!cleared || this.showCleared) && !bundled);
    this.onRendered(card.id);
  }

  renderInfo(card) {
    const box = card.refs.info;
    box.replaceChildren();
    const info = card.info;
    if (!isObject(info)) {
      show(box, false);
      return;
    }
    const preview = safeHttpUrl(info.preview_url);
    if (preview && !/\.(mp4|webm|mov)(\?|$)/i.test(preview)) {
      const image = el("img", {
        class: "job-preview",
        alt: typeof info.model_name === "string" ? `Preview of ${info.model_name}` : "Model preview",
        loading: "lazy",
        decoding: "async",
        referrerpolicy: "no-referrer",
        width: "96",
        height: "96",
      });
      image.addEventListener("error", () => image.remove());
      image.src = preview;
      box.append(image);
    }
    const list = el("dl", { class: "job-facts" });
    const add = (name, value) => {
      list.append(el("div", {}, [el("dt", { text: name }), el("dd", { text: value })]));
    };
    if (isText(info.model_name)) add("Model", info.model_name);
    if (isText(info.version_name)) add("Version", info.version_name);
    if (isText(info.base_model)) add("Base model", info.base_model);
    const file = describeFileHeader(info.file);
    if (file) add("File", file);
    const warnings = Array.isArray(info.warnings) ? info.warnings.filter((w) => isText(w)) : [];
    for (const warning of warnings.slice(0, 3)) {
      list.append(el("div", { class: "job-warning" }, [el("dt", { text: "Warning" }), el("dd", { text: shorten(warning, 300) })]));
    }
    const modelId = Number(info.model_id);
    const versionId = Number(info.version_id);
    const page = Number.isSafeInteger(modelId) && modelId > 0
      ? civitaiModelPage(modelId, Number.isSafeInteger(versionId) && versionId > 0 ? versionId : null)
      : null;
    if (page) {
      const link = el("a", { href: page.href, target: "_blank", rel: "noopener noreferrer", text: "Open on CivitAI" });
      list.append(el("div", {}, [el("dt", { text: "Page" }), el("dd", {}, [link])]));
    }
    let extra = 0;
    for (const [key, value] of Object.entries(info)) {
      if (META_SPECIAL.has(key) || META_SKIP.has(key) || META_HIDDEN.test(key) || extra >= 12) continue;
      if (key.endsWith("_url")) {
        const href = safeHttpUrl(value);
        if (!href) continue;
        const link = el("a", { href, target: "_blank", rel: "noopener noreferrer", text: shorten(value, 80) });
        list.append(el("div", {}, [el("dt", { text: humanKey(key.replace(/_url$/, "")) }), el("dd", {}, [link])]));
        extra += 1;
        continue;
      }
      let text = null;
      if (isText(value) || typeof value === "number") text = String(value);
      else if (typeof value === "boolean") text = value ? "yes" : "no";
      else if (Array.isArray(value) && value.length && value.every((v) => isText(v) || typeof v === "number")) {
        text = value.join(", ");
      }
      if (text === null) continue;
      if (/size|bytes/i.test(key) && typeof value === "number") text = formatBytes(value);
      if (key === "sha256") text = shorten(text, 17);
      add(META_NAMES[key] ?? humanKey(key), shorten(text, 200));
      extra += 1;
    }
    if (list.children.length) box.append(list);

    const words = Array.isArray(info.trained_words)
      ? info.trained_words.filter((w) => isText(w)).map((w) => w.trim()).filter(Boolean)
      : [];
    if (words.length) {
      const chips = el("ul", { class: "job-words", "aria-label": "Trigger words" });
      for (const word of words.slice(0, 50)) chips.append(el("li", {}, [el("code", { text: shorten(word, 120) })]));
      const copy = el("button", { type: "button", class: "button small ghost copy-words", text: "Copy trigger words" });
      const status = el("span", { class: "copy-status", role: "status" });
      copy.addEventListener("click", async () => {
        const done = await copyText(words.join(", "));
        setText(status, done ? "Copied" : "Could not copy: select the words by hand");
        setTimeout(() => setText(status, ""), 2500);
      });
      box.append(el("div", { class: "job-trained" }, [
        el("span", { class: "job-trained-title", text: "Trigger words" }),
        chips,
        el("div", { class: "job-trained-actions" }, [copy, status]),
      ]));
    }
    box.classList.toggle("rich", box.querySelector("img, .job-trained") !== null);
    show(box, box.childElementCount > 0);
  }
}

/** What the file's own header said ("diffusion model · Flux"), or why it said nothing. */
export function describeFileHeader(file) {
  if (!isObject(file)) return null;
  const finding = isObject(file.finding) ? file.finding : null;
  if (finding && isText(finding.kind)) {
    const parts = [finding.kind.replaceAll("_", " ")];
    if (isText(finding.family)) parts.push(finding.family);
    if (isText(finding.format)) parts.push(finding.format);
    return parts.join(" · ");
  }
  return isText(file.detail) ? shorten(file.detail, 200) : null;
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
  return target;
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function isText(value) {
  return typeof value === "string" && value.trim() !== "";
}

function shorten(text, limit) {
  const value = String(text);
  return value.length > limit ? `${value.slice(0, limit - 1)}…` : value;
}
