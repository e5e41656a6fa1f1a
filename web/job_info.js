// What a job's card says about the model beyond its progress: the preview, the facts the
// source gave (CivitAI's model and version, the file's own header, warnings), a link to the
// model's page and the trigger words with a copy button. Keys that name secrets are never shown.

import { copyText, el, setText, show } from "./dom.js";
import { formatBytes, humanKey, isObject, isText, safeHttpUrl, shorten } from "./format.js";
import { civitaiModelPage } from "./vocabulary.js";

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
const MORE_FACTS = 12; // other fields shown at most, after the known ones
const VIDEO = /\.(mp4|webm|mov)(\?|$)/i;

/** Fill `box` from a job's metadata (or hide it when there is none). */
export function renderJobInfo(box, info) {
  box.replaceChildren();
  if (!isObject(info)) {
    show(box, false);
    return;
  }
  const image = previewImage(info);
  if (image) box.append(image);
  const facts = factList(info);
  if (facts.children.length) box.append(facts);
  const words = triggerWords(info);
  if (words) box.append(words);
  box.classList.toggle("rich", box.querySelector("img, .job-trained") !== null);
  show(box, box.childElementCount > 0);
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

function previewImage(info) {
  const preview = safeHttpUrl(info.preview_url);
  if (!preview || VIDEO.test(preview)) return null;
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
  return image;
}

function factList(info) {
  const list = el("dl", { class: "job-facts" });
  const add = (name, value, className) => {
    const dd = value instanceof Node ? el("dd", {}, [value]) : el("dd", { text: value });
    list.append(el("div", className ? { class: className } : {}, [el("dt", { text: name }), dd]));
  };
  if (isText(info.model_name)) add("Model", info.model_name);
  if (isText(info.version_name)) add("Version", info.version_name);
  if (isText(info.base_model)) add("Base model", info.base_model);
  const file = describeFileHeader(info.file);
  if (file) add("File", file);
  const warnings = Array.isArray(info.warnings) ? info.warnings.filter((w) => isText(w)) : [];
  for (const warning of warnings.slice(0, 3)) add("Warning", shorten(warning, 300), "job-warning");
  const page = modelPage(info);
  if (page) add("Page", outLink(page.href, "Open on CivitAI"));
  let extra = 0;
  for (const [key, value] of Object.entries(info)) {
    if (extra >= MORE_FACTS || META_SPECIAL.has(key) || META_SKIP.has(key) || META_HIDDEN.test(key)) continue;
    const fact = otherFact(key, value);
    if (!fact) continue;
    add(fact.name, fact.value);
    extra += 1;
  }
  return list;
}

function modelPage(info) {
  const modelId = Number(info.model_id);
  const versionId = Number(info.version_id);
  if (!Number.isSafeInteger(modelId) || modelId <= 0) return null;
  return civitaiModelPage(modelId, Number.isSafeInteger(versionId) && versionId > 0 ? versionId : null);
}

/** A field the page has no special place for: a link, or a short text; null to leave it out. */
function otherFact(key, value) {
  if (key.endsWith("_url")) {
    const href = safeHttpUrl(value);
    return href ? { name: humanKey(key.replace(/_url$/, "")), value: outLink(href, shorten(value, 80)) } : null;
  }
  let text = null;
  if (isText(value) || typeof value === "number") text = String(value);
  else if (typeof value === "boolean") text = value ? "yes" : "no";
  else if (Array.isArray(value) && value.length && value.every((v) => isText(v) || typeof v === "number")) {
    text = value.join(", ");
  }
  if (text === null) return null;
  if (/size|bytes/i.test(key) && typeof value === "number") text = formatBytes(value);
  if (key === "sha256") text = shorten(text, 17);
  return { name: META_NAMES[key] ?? humanKey(key), value: shorten(text, 200) };
}

function outLink(href, text) {
  return el("a", { href, target: "_blank", rel: "noopener noreferrer", text });
}

function triggerWords(info) {
  const words = Array.isArray(info.trained_words)
    ? info.trained_words.filter((w) => isText(w)).map((w) => w.trim()).filter(Boolean)
    : [];
  if (!words.length) return null;
  const chips = el("ul", { class: "job-words", "aria-label": "Trigger words" });
  for (const word of words.slice(0, 50)) chips.append(el("li", {}, [el("code", { text: shorten(word, 120) })]));
  const copy = el("button", { type: "button", class: "button small ghost copy-words", text: "Copy trigger words" });
  const status = el("span", { class: "copy-status", role: "status" });
  copy.addEventListener("click", async () => {
    const done = await copyText(words.join(", "));
    setText(status, done ? "Copied" : "Could not copy: select the words by hand");
    setTimeout(() => setText(status, ""), 2500);
  });
  return el("div", { class: "job-trained" }, [
    el("span", { class: "job-trained-title", text: "Trigger words" }),
    chips,
    el("div", { class: "job-trained-actions" }, [copy, status]),
  ]);
}
