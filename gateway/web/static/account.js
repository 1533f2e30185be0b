// The customer's account: where notices are mailed (email) and where books
// go by default (address). A changed address applies to later reservations;
// a book already on its way keeps the address it was reserved with.

import { fieldErrors, get, request } from "./api.js";
import { busy, field, h, messageArea, say } from "./dom.js";

export function render() {
  const email = field("Email (where your notices are mailed)", {
    name: "email", id: "account-email", type: "email", autocomplete: "email", maxlength: 254 });
  const addressInput = h("textarea", { name: "address", id: "account-address", rows: 3, maxlength: 300,
    autocomplete: "street-address" });
  const addressError = h("span", { class: "field-error", id: "account-address-error" });
  addressInput.setAttribute("aria-describedby", addressError.id);
  const address = { input: addressInput, error: addressError,
    wrapper: h("label", {}, h("span", { text: "Address (where your books are delivered)" }), addressInput, addressError) };
  const fields = { email, address };
  const message = messageArea();
  const save = h("button", { type: "submit", class: "button", text: "Save" });
  const form = h("form", { class: "card form", id: "account-form", novalidate: true, "aria-labelledby": "account-form-title" },
    h("h2", { id: "account-form-title", text: "Contact details" }),
    email.wrapper, address.wrapper,
    h("p", { class: "meta", text: "A new address is used for the reservations you make from now on." }),
    h("div", { class: "row" }, save),
    message);

  function fill(account) {
    email.input.value = account.email || "";
    address.input.value = account.address || "";
    el.dataset.loaded = "true";
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(save, async () => {
      say(message, "");
      for (const f of Object.values(fields)) {
        f.error.textContent = "";
        f.input.removeAttribute("aria-invalid");
      }
      // An emptied field clears it (null), as the API says.
      const body = { email: email.input.value.trim() || null, address: address.input.value.trim() || null };
      try {
        fill(await request("PATCH", "/account", { body }));
        say(message, "Saved.", "ok");
      } catch (error) {
        const errors = fieldErrors(error.details);
        for (const [name, f] of Object.entries(fields)) {
          f.error.textContent = errors[name] || "";
          if (errors[name]) f.input.setAttribute("aria-invalid", "true");
        }
        say(message, error.message, "error");
      }
    });
  });

  const el = h("section", { class: "view account stack", "aria-labelledby": "account-title" },
    h("div", { class: "view-head" },
      h("div", {}, h("h1", { id: "account-title", text: "Account" }),
        h("p", { class: "lead", text: "How the library reaches you." }))),
    form);
  get("/account").then(fill).catch((error) => {
    if (error.status !== 401) say(message, error.message, "error");
  });
  return { el, dispose() {} };
}
