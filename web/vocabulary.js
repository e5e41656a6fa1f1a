// The protocol's words as the server says them (the `vocabulary` in `hello`):
// source names, the CivitAI site, the longest link. The page keeps no copy of its own;
// until the first hello arrives, it knows only what is needed to show a link.

const vocabulary = {
  sources: new Map(),
  civitaiSite: "",
  maxUrlLength: 4096,
};

/** Take the server's vocabulary; unknown or malformed parts are ignored. */
export function setVocabulary(data) {
  if (!data || typeof data !== "object") return;
  if (Array.isArray(data.sources)) {
    vocabulary.sources = new Map(
      data.sources
        .filter((s) => s && typeof s.name === "string" && typeof s.label === "string")
        .map((s) => [s.name, s.label]),
    );
  }
  if (typeof data.civitai_site === "string") vocabulary.civitaiSite = data.civitai_site;
  if (Number.isSafeInteger(data.max_url_length) && data.max_url_length > 0) {
    vocabulary.maxUrlLength = data.max_url_length;
  }
}

/** "CivitAI", "Hugging Face", "Google Drive", "Direct link"...: the server's label for a source. */
export function sourceLabel(name) {
  return typeof name === "string" ? vocabulary.sources.get(name) ?? "" : "";
}

/** "CivitAI", "Hugging Face", or "Direct link · example.com" for a plain link. */
export function sourceText(source, url) {
  const label = sourceLabel(source) || (typeof source === "string" && source) || "Link";
  if (source !== "direct") return label;
  try {
    const host = url ? new URL(url).hostname : "";
    return host ? `${label} · ${host}` : label;
  } catch {
    return label;
  }
}

/** The page of a CivitAI model (the server's CIVITAI_BASE_URL), or null before the server said. */
export function civitaiModelPage(modelId, versionId) {
  if (!vocabulary.civitaiSite) return null;
  try {
    const page = new URL(`models/${modelId}`, `${vocabulary.civitaiSite.replace(/\/+$/, "")}/`);
    if (versionId) page.searchParams.set("modelVersionId", String(versionId));
    return page.protocol === "https:" || page.protocol === "http:" ? page : null;
  } catch {
    return null;
  }
}

export function maxUrlLength() {
  return vocabulary.maxUrlLength;
}
