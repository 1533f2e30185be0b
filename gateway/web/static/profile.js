// The customer's profile: their email (where notices go) and address (where
// books go), from GET /account, changed with PATCH /account (SPEC §5). Each
// field's error is shown next to it. Only what was changed is sent.

import { fieldErrors, get, patch } from "./api.js";
import { busy, field, h, messageArea, say, showError } from "./dom.js";

const ADDRESS_MAX = 300;

export function render() {
  const message = messageArea();
  message.id = "profile-message";
  const fields = {
    email: field("Email", { name: "email", id: "profile-email", type: "email", autocomplete: "email", maxlength: 254 },
      { hint: "Where we write when something happens to your books. Leave it empty for no mail." }),
    address: field("Delivery address", { name: "address", id: "profile-address", autocomplete: "street-address",
      maxlength: ADDRESS_MAX, rows: 4 },
    { hint: "Where we bring your books, 300 characters at most. A new address is used for the reservations you make from now on.",
      multiline: true }),
  };
  const save = h("button", { type: "submit", class: "button", text: "Save changes" });
  const form = h("form", { class: "card form", id: "profile", novalidate: true, "aria-labelledby": "profile-form-title", hidden: true },
    h("h2", { id: "profile-form-title", text: "Your details" }),
    h("p", { class: "meta" }, "Signed in as ", h("strong", { class: "profile-username" }), "."),
    fields.email.wrapper, fields.address.wrapper,
    h("div", { class: "row" }, save),
    message);
  const pageMessage = messageArea();
  let saved = { email: "", address: "" }; // as the gateway last answered

  function fill(account) {
    saved = { email: account.email || "", address: account.address || "" };
    form.querySelector(".profile-username").textContent = account.username;
    fields.email.input.value = saved.email;
    fields.address.input.value = saved.address;
    form.hidden = false;
  }

  /** What the person may fix before sending: said next to the field. */
  function localErrors(body) {
    const errors = {};
    if (typeof body.email === "string" && !/^[^\s@]+@[^\s@]+$/.test(body.email)) {
      errors.email = "Enter an email address like name@example.org, or leave it empty.";
    }
    if (typeof body.address === "string" && body.address.length > ADDRESS_MAX) {
      errors.address = `At most ${ADDRESS_MAX} characters (this is ${body.address.length}).`;
    }
    return errors;
  }

  function mark(errors) {
    let first = null;
    for (const [name, f] of Object.entries(fields)) {
      showError(f, errors[name]);
      if (errors[name] && !first) first = f.input;
    }
    if (first) first.focus();
    return Boolean(first);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(save, async () => {
      say(message, "");
      const body = {};
      for (const name of Object.keys(fields)) {
        const value = fields[name].input.value.trim();
        if (value !== saved[name]) body[name] = value === "" ? null : value;
      }
      if (mark(localErrors(body))) {
        say(message, "Please check the fields marked above.", "error");
        return;
      }
      if (!Object.keys(body).length) {
        say(message, "Nothing to save: nothing was changed.", "info");
        return;
      }
      try {
        fill(await patch("/account", body));
        say(message, "Saved.", "ok");
      } catch (error) {
        const errors = error.status === 400 ? fieldErrors(error.details) : {};
        say(message, mark(errors) ? "Please check the fields marked above." : error.message, "error");
      }
    });
  });

  const el = h("section", { class: "view profile stack", "aria-labelledby": "profile-title" },
    h("div", { class: "view-head" },
      h("div", {}, h("h1", { id: "profile-title", text: "Profile" }),
        h("p", { class: "lead", text: "Where we write to you and where we bring your books." }))),
    pageMessage, form);

  get("/account").then(fill).catch((error) => {
    if (error.status !== 401) say(pageMessage, `Your details could not be loaded. ${error.message}`, "error");
  }).finally(() => {
    el.dataset.loaded = "true";
  });
  return { el, dispose() {} };
}
