// Small pure helpers: units, durations, link checks and labels.
// Nothing here touches the DOM, so the functions are easy to reason about.

const BYTE_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/** Bytes in binary units: "512 B", "1.50 KiB", "44.0 MiB", "120 GiB". */
export function formatBytes(bytes) {
  if (typeof bytes !== "number" || !Number.isFinite(bytes) || bytes < 0) return "?";
  if (bytes < 1024) return `${Math.round(bytes)} B`;
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < BYTE_UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = value >= 100 ? 0 : value >= 10 ? 1 : 2;
  return `${value.toFixed(digits)} ${BYTE_UNITS[unit]}`;
}

/** A rate given in MB/s (10^6 bytes per second), as the protocol sends it. */
export function formatRate(mbPerSecond) {
  if (typeof mbPerSecond !== "number" || !Number.isFinite(mbPerSecond) || mbPerSecond < 0) {
    return "";
  }
  const digits = mbPerSecond >= 100 ? 0 : mbPerSecond >= 10 ? 1 : 2;
  return `${mbPerSecond.toFixed(digits)} MB/s`;
}

/** Seconds as "1h 2m 3s", "4m 5s" or "6s"; "" when unknown. */
export function formatEta(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds) || seconds < 0) return "";
  const total = Math.round(seconds);
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const secs = total % 60;
  if (hours > 0) return `${hours}h ${minutes}m ${secs}s`;
  if (minutes > 0) return `${minutes}m ${secs}s`;
  return `${secs}s`;
}

/** Whole percent, only 100 when really done (floor, clamped to 0..100). */
export function toPercent(progress) {
  if (typeof progress !== "number" || !Number.isFinite(progress)) return 0;
  return Math.max(0, Math.min(100, Math.floor(progress * 100 + 1e-9)));
}

/** A short local date and time for a Unix timestamp in seconds. */
export function formatDate(unixSeconds) {
  if (typeof unixSeconds !== "number" || !Number.isFinite(unixSeconds)) return "";
  try {
    return new Date(unixSeconds * 1000).toLocaleString(undefined, {
      dateStyle: "medium",
      timeStyle: "short",
    });
  } catch {
    return "";
  }
}

/**
 * Check a pasted link before it is sent: only that there is one and it is not too long.
 * The server decides everything else (links, short forms, AIRs), and its answer says why.
 * Returns {ok: true, url} or {ok: false, code, message} with a message for a person.
 */
export function checkUrl(raw, maxLength = 4096) {
  const text = String(raw ?? "").trim();
  if (!text) {
    return { ok: false, code: "empty_url", message: "Paste a link to a model file first." };
  }
  if (text.length > maxLength) {
    return { ok: false, code: "invalid_url", message: `That link is too long (over ${maxLength} characters).` };
  }
  return { ok: true, url: text };
}

/** Only http(s) addresses may become a link or an image source. */
export function safeHttpUrl(value) {
  if (typeof value !== "string" || value.length > 4096) return null;
  try {
    const parsed = new URL(value);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch {
    return null;
  }
}

export const STATE_TEXT = {
  queued: "Queued",
  resolving: "Resolving link",
  downloading: "Downloading",
  paused: "Paused",
  verifying: "Verifying",
  completed: "Completed",
  failed: "Failed",
  cancelled: "Cancelled",
};

export const FINISHED_STATES = new Set(["completed", "failed", "cancelled"]);
export const ACTIVE_STATES = new Set(["queued", "resolving", "downloading", "paused", "verifying"]);

/** The last path segment of a link, used as a label until the server names the file. */
export function nameFromUrl(url) {
  try {
    const parts = new URL(url).pathname.split("/").filter(Boolean);
    const last = parts.length ? decodeURIComponent(parts[parts.length - 1]) : "";
    return last || url;
  } catch {
    return String(url ?? "");
  }
}

/** "trained_words" -> "Trained words". */
export function humanKey(key) {
  const text = String(key).replace(/[_-]+/g, " ").trim();
  return text ? text[0].toUpperCase() + text.slice(1) : "";
}

export function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

export function isText(value) {
  return typeof value === "string" && value.trim() !== "";
}

/** `text` cut to `limit` characters, with an ellipsis when it was longer. */
export function shorten(text, limit) {
  const value = String(text);
  return value.length > limit ? `${value.slice(0, limit - 1)}…` : value;
}
