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

/**
 * Disable a button while ``work`` runs; returns what ``work`` returns. A
 * disabled button loses the keyboard focus: it gets it back afterwards (if it
 * is still shown and nothing else took the focus meanwhile).
 */
export async function busy(button, work) {
  const hadFocus = document.activeElement === button;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
    const lost = document.activeElement === null || document.activeElement === document.body;
    if (hadFocus && lost && button.isConnected && button.getClientRects().length) button.focus();
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

/**
 * A labelled input (or, with ``multiline``, a textarea) with an optional
 * hint and a place for its own error under it:
 * field("Email", {name: "email", type: "email"}, {hint: "Where notices go."})
 * → {wrapper, input, error, hint}; showError(f, text) marks it.
 */
export function field(label, inputAttrs, { hint = "", multiline = false } = {}) {
  const input = h(multiline ? "textarea" : "input", inputAttrs);
  const base = inputAttrs.id || inputAttrs.name;
  const error = h("span", { class: "field-error", id: `${base}-error` });
  const hintEl = hint ? h("span", { class: "field-hint", id: `${base}-hint`, text: hint }) : null;
  input.setAttribute("aria-describedby", [hintEl && hintEl.id, error.id].filter(Boolean).join(" "));
  const wrapper = h("label", { class: "field" }, h("span", { class: "field-label", text: label }), hintEl, input, error);
  return { wrapper, input, error, hint: hintEl };
}

/** Show (or, with "", clear) a field's own error, next to it and to assistive technology. */
export function showError(f, text) {
  f.error.textContent = text || "";
  if (text) f.input.setAttribute("aria-invalid", "true");
  else f.input.removeAttribute("aria-invalid");
}

/**
 * Move the keyboard focus to ``el`` (a heading, a list item...) after an
 * action removed or replaced the element that had it, so it never falls
 * back to the top of the page. The element becomes focusable by script only.
 */
export function focusOn(el) {
  if (!el || !el.isConnected) return;
  if (!el.matches("a[href], button, input, select, textarea, [tabindex]")) el.setAttribute("tabindex", "-1");
  el.focus({ preventScroll: false });
}
