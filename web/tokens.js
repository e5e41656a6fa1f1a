// API keys for CivitAI and Hugging Face, kept in this browser's localStorage only.
// They go out in download messages and are never written anywhere on the page
// except their own (masked) input fields.

import { setText, show } from "./dom.js";

export const TOKEN_KEYS = {
  civitai: "sd-civitai-token",
  hf: "sd-huggingface-token",
};

const NAMES = { civitai: "CivitAI", hf: "Hugging Face" };

function read(key) {
  try {
    return localStorage.getItem(key) ?? "";
  } catch {
    return "";
  }
}

function write(key, value) {
  try {
    if (value) localStorage.setItem(key, value);
    else localStorage.removeItem(key);
    return true;
  } catch {
    return false;
  }
}

/** The saved tokens as download-message fields; empty ones are left out. */
export function savedTokenFields() {
  const fields = {};
  const civitai = read(TOKEN_KEYS.civitai).trim();
  const hf = read(TOKEN_KEYS.hf).trim();
  if (civitai) fields.civitai_token = civitai;
  if (hf) fields.hf_token = hf;
  return fields;
}

/**
 * Wire the key form.
 * @param {{form: HTMLFormElement, inputs: {civitai: HTMLInputElement, hf: HTMLInputElement},
 *          status: HTMLElement}} parts
 */
export function setupTokens({ form, inputs, status }) {
  const badges = {};
  for (const [which, input] of Object.entries(inputs)) {
    input.value = read(TOKEN_KEYS[which]);
    input.type = "password";
    badges[which] = document.querySelector(`[data-token-saved="${which}"]`);
  }

  const refreshBadges = () => {
    for (const which of Object.keys(inputs)) {
      if (badges[which]) show(badges[which], read(TOKEN_KEYS[which]) !== "");
    }
  };
  refreshBadges();

  let statusTimer = 0;
  const say = (text, keep = false) => {
    clearTimeout(statusTimer);
    setText(status, text);
    if (!keep) statusTimer = setTimeout(() => setText(status, ""), 4000);
  };

  const unsaved = () =>
    Object.entries(inputs).some(([which, input]) => input.value.trim() !== read(TOKEN_KEYS[which]));

  for (const input of Object.values(inputs)) {
    input.addEventListener("input", () => {
      if (unsaved()) say("Changes not saved yet.", true);
      else say("");
    });
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    let ok = true;
    for (const [which, input] of Object.entries(inputs)) {
      const value = input.value.trim();
      input.value = value;
      ok = write(TOKEN_KEYS[which], value) && ok;
    }
    refreshBadges();
    say(ok ? "Keys saved in this browser." : "Could not save: this browser blocks local storage.");
  });

  for (const button of form.querySelectorAll("[data-reveal]")) {
    const which = button.dataset.reveal;
    const input = inputs[which];
    button.addEventListener("click", () => {
      const reveal = input.type === "password";
      input.type = reveal ? "text" : "password";
      button.setAttribute("aria-pressed", String(reveal));
      setText(button, reveal ? "Hide" : "Show");
      button.setAttribute("aria-label", `${reveal ? "Hide" : "Show"} ${NAMES[which]} key`);
    });
  }

  for (const button of form.querySelectorAll("[data-clear]")) {
    const which = button.dataset.clear;
    const input = inputs[which];
    button.addEventListener("click", () => {
      input.value = "";
      write(TOKEN_KEYS[which], "");
      refreshBadges();
      say(`${NAMES[which]} key removed from this browser.`);
      input.focus();
    });
  }
}
