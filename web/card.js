// The parts a job's card and a bundle's card share: the progress bar and the row of action
// buttons. Each list keeps its own card layout and rules; only these pieces are common.

import { el, setAttr } from "./dom.js";

/** A progress bar labelled by the element with id `labelId`: {bar, fill}. */
export function progressBar(labelId) {
  const fill = el("div", { class: "progress-fill" });
  const bar = el(
    "div",
    {
      class: "progress",
      role: "progressbar",
      "aria-valuemin": "0",
      "aria-valuemax": "100",
      "aria-valuenow": "0",
      "data-progress": "0",
      "aria-labelledby": labelId,
    },
    [fill],
  );
  return { bar, fill };
}

/** Show `percent` (0-100) on a bar from progressBar; `stateText` is read out with it. */
export function showProgress(bar, fill, percent, stateText) {
  setAttr(bar, "data-progress", percent);
  setAttr(bar, "aria-valuenow", percent);
  setAttr(bar, "aria-valuetext", `${percent}% ${stateText.toLowerCase()}`);
  fill.style.setProperty("--p", String(percent / 100));
}

/** One hidden button per action, in `order`, labelled from `texts`: {actions, buttons}. */
export function actionButtons(order, texts, onClick) {
  const actions = el("div", { class: "job-actions" });
  const buttons = {};
  for (const action of order) {
    const button = el("button", {
      type: "button",
      class: `button small action-${action}`,
      "data-action": action,
      text: texts[action],
      hidden: true,
    });
    button.addEventListener("click", () => onClick(action, button));
    buttons[action] = button;
    actions.append(button);
  }
  return { actions, buttons };
}
