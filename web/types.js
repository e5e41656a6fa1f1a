// The model types the server offers (from `hello`, or GET api/types before the socket is up):
// the form's type menu, the folder hint under it, the last type this browser picked, and the
// short names the cards show.

import { el, setText, show } from "./dom.js";

const LAST_TYPE_KEY = "sd-last-type";

export class ModelTypes {
  /**
   * @param {{select: HTMLSelectElement, folderHint: HTMLElement, onChange: () => void}} parts
   */
  constructor({ select, folderHint, onChange }) {
    Object.assign(this, { select, folderHint, onChange });
    this.list = []; // [{name, description, folder}] in the server's order
    this.byName = new Map();
    select.addEventListener("change", () => {
      this.showFolder();
      remember(select.value);
    });
  }

  has(name) {
    return this.byName.has(name);
  }

  /** "LoRA" for "LoRA (low-rank adapters)"; the name itself for a type the server did not list. */
  describe(name) {
    const type = this.byName.get(name);
    const text = type ? type.description || type.name || "" : name ?? "";
    return type ? text.replace(/\s*\(.*\)\s*$/, "") : text;
  }

  /** Take the server's list; false when it held no usable type. */
  set(types) {
    const valid = (Array.isArray(types) ? types : []).filter((t) => t && typeof t.name === "string");
    if (!valid.length) return false;
    const current = this.select.value; // read before the options change under it
    this.list = valid;
    this.byName = new Map(valid.map((t) => [t.name, t]));
    this.select.replaceChildren(...valid.map((t) => el("option", { value: t.name, text: t.description || t.name })));
    this.select.value = this.pick(current);
    this.select.disabled = false;
    this.showFolder();
    this.onChange();
    return true;
  }

  /** Before the socket brings them: the REST list (the socket's `hello` follows anyway). */
  async load() {
    try {
      const response = await fetch("api/types", { headers: { Accept: "application/json" } });
      if (response.ok) this.set((await response.json())?.types);
    } catch {
      // the socket will bring them with the next hello
    }
  }

  /** The type chosen now if the server still has it, else the last one picked here, else lora. */
  pick(current) {
    for (const wanted of [current, recalled()]) if (this.byName.has(wanted)) return wanted;
    return this.byName.has("lora") ? "lora" : this.list[0].name;
  }

  showFolder() {
    const type = this.byName.get(this.select.value);
    // "auto" has no folder of its own
    const folder = type ? (type.folder ? `${type.folder}/` : "the folder the file's own header or CivitAI's model type names") : "";
    setText(this.folderHint.querySelector("code"), folder);
    show(this.folderHint, Boolean(type));
  }
}

function recalled() {
  try {
    return localStorage.getItem(LAST_TYPE_KEY) ?? "";
  } catch {
    return "";
  }
}

function remember(name) {
  try {
    localStorage.setItem(LAST_TYPE_KEY, name);
  } catch {
    // not important
  }
}
