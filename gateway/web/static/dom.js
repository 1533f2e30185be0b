// Building the page safely: every piece of data goes in as text (a text
// node or textContent), never as HTML, so a title like "<img onerror=...>"
// is shown as those characters and never runs.

/**
 * h("button", {class: "button", onclick: fn, dataset: {id: 3}}, "Reserve")
 * Attributes are set one by one; children are nodes or text.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "style" || (key.startsWith("on") && typeof value !== "function")) {
      throw new Error(`h(): ${key} is not allowed`); // CSP refuses inline styles and handlers
    }
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = String(value);
    else if (key === "dataset") for (const [k, v] of Object.entries(value)) el.dataset[k] = String(v);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

/** A message area; say(el, text or [nodes], "error" | "ok" | "info"); say(el, "") clears. */
export function messageArea(extraClass = "") {
  return h("p", { class: `msg ${extraClass}`.trim(), role: "status", "aria-live": "polite" });
}

export function say(el, content, kind = "info") {
  el.classList.remove("error", "ok", "info");
  if (Array.isArray(content)) append(el.replaceChildren() || el, content);
  else el.textContent = content || "";
  if (el.textContent) el.classList.add(kind);
  el.setAttribute("role", kind === "error" ? "alert" : "status");
}

/** Disable a button while ``work`` runs; returns what ``work`` returns. */
export async function busy(button, work) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

/** An ISO 8601 time as a <time> element, in the reader's own time zone. */
export function timeEl(iso) {
  if (!iso) return h("span", { text: "—" });
  const date = new Date(iso);
  const text = Number.isNaN(date.getTime()) ? iso : dateFormat.format(date);
  return h("time", { datetime: iso, text });
}

/** A labelled input with a place for its own error under it. */
export function field(label, inputAttrs) {
  const input = h("input", inputAttrs);
  const error = h("span", { class: "field-error", id: `${inputAttrs.id || inputAttrs.name}-error` });
  input.setAttribute("aria-describedby", error.id);
  const wrapper = h("label", {}, h("span", { text: label }), input, error);
  return { wrapper, input, error };
}
