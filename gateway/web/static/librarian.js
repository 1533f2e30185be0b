// The librarian's page: register a title, add stock, see stock per title.

import { fieldErrors, get, post } from "./api.js";
import { busy, field, h, messageArea, say, showError } from "./dom.js";

const PAGE = 100;

function registerForm(onRegistered) {
  const fields = {
    isbn: field("ISBN", { name: "isbn", id: "book-isbn", required: true, maxlength: 32, autocomplete: "off" }),
    title: field("Title", { name: "title", id: "book-title", required: true, maxlength: 300, autocomplete: "off" }),
    author: field("Author", { name: "author", id: "book-author", required: true, maxlength: 300, autocomplete: "off" }),
    copies: field("Copies", { name: "copies", id: "book-copies", type: "number", min: 0, max: 100000, step: 1, value: 1, required: true }),
  };
  const message = messageArea();
  const submit = h("button", { type: "submit", class: "button", text: "Register title" });
  const form = h("form", { class: "card form", id: "register-book", novalidate: true, "aria-labelledby": "register-title" },
    h("h2", { id: "register-title", text: "Register a title" }),
    h("div", { class: "form-grid" }, Object.values(fields).map((f) => f.wrapper)),
    h("div", { class: "row" }, submit),
    message);

  /** Each field's own error next to it; the keyboard goes to the first one. */
  function showFieldErrors(errors) {
    let first = null;
    for (const [name, f] of Object.entries(fields)) {
      showError(f, errors[name]);
      if (errors[name] && !first) first = f.input;
    }
    if (first) first.focus();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(submit, async () => {
      say(message, "");
      const copiesText = fields.copies.input.value.trim();
      const body = {
        isbn: fields.isbn.input.value.trim(),
        title: fields.title.input.value.trim(),
        author: fields.author.input.value.trim(),
        copies: /^\d+$/.test(copiesText) ? Number(copiesText) : copiesText,
      };
      const local = {};
      for (const name of ["isbn", "title", "author"]) if (!body[name]) local[name] = "Please fill this in.";
      if (typeof body.copies !== "number") local.copies = "Enter a whole number, 0 or more.";
      showFieldErrors(local);
      if (Object.keys(local).length) {
        say(message, "Please check the fields marked above.", "error");
        return;
      }
      try {
        const book = await post("/books", body);
        form.reset();
        say(message, `Registered “${book.title}” with ${book.stock} ${book.stock === 1 ? "copy" : "copies"} in stock.`, "ok");
        onRegistered(book);
      } catch (error) {
        showFieldErrors(error.status === 400 ? fieldErrors(error.details) : {});
        say(message, error.message, "error");
      }
    });
  });
  return form;
}

export function render() {
  const pageMessage = messageArea();
  const body = h("tbody", { id: "stock-rows" });
  const more = h("button", { type: "button", class: "button quiet", hidden: true, text: "Show more titles" });
  const reload = h("button", { type: "button", class: "button quiet", text: "Refresh" });
  const empty = h("p", { class: "empty", hidden: true, text: "No titles yet: register the first one above." });
  const rows = new Map(); // book id → {tr, stock}

  function upsert(book, atTop = false) {
    let row = rows.get(book.id);
    if (!row) {
      const stock = h("td", { class: "num stock", "data-label": "In stock" });
      const title = h("th", { class: "book-title", scope: "row", "data-label": "Title" });
      const meta = h("td", { class: "meta", "data-label": "Author" });
      const isbn = h("td", { class: "meta", "data-label": "ISBN" });
      const quantity = h("input", { type: "number", class: "small", name: "quantity", min: 1, max: 100000, step: 1, value: 1,
        "aria-label": `Copies to add to ${book.title}` });
      const add = h("button", { type: "button", class: "button", "data-action": "add-stock", text: "Add stock" });
      const message = messageArea();
      const tr = h("tr", { "data-book-id": book.id },
        title, meta, isbn, stock,
        h("td", { class: "add-copies", "data-label": "Add copies" }, h("div", { class: "row nowrap" }, quantity, add), message));
      add.addEventListener("click", () => busy(add, async () => {
        say(message, "");
        const text = quantity.value.trim();
        if (!/^\d+$/.test(text) || Number(text) < 1) {
          say(message, "Enter a whole number of copies, 1 or more.", "error");
          return;
        }
        try {
          const updated = await post(`/books/${book.id}/stock`, { quantity: Number(text) });
          upsert(updated);
          say(message, `Added ${text}. ${updated.stock} in stock now.`, "ok");
        } catch (error) {
          say(message, error.message, "error");
        }
      }));
      row = { tr, title, meta, isbn, stock };
      rows.set(book.id, row);
      if (atTop) body.prepend(tr);
      else body.append(tr);
    }
    row.title.textContent = book.title;
    row.meta.textContent = book.author;
    row.isbn.textContent = book.isbn;
    row.stock.textContent = String(book.stock);
    row.tr.dataset.stock = String(book.stock);
    empty.hidden = rows.size > 0;
  }

  let cursor = null;
  async function load() {
    try {
      const path = cursor ? `/books?limit=${PAGE}&cursor=${encodeURIComponent(cursor)}` : `/books?limit=${PAGE}`;
      const page = await get(path);
      page.items.forEach((book) => upsert(book));
      cursor = page.next;
      more.hidden = !cursor;
      empty.hidden = rows.size > 0;
      say(pageMessage, "");
    } catch (error) {
      say(pageMessage, `The stock could not be loaded. ${error.message}`, "error");
    }
    el.dataset.loaded = "true";
  }
  more.addEventListener("click", () => busy(more, load));
  reload.addEventListener("click", () => busy(reload, async () => {
    cursor = null;
    await load();
  }));

  const el = h("section", { class: "view librarian stack", "aria-labelledby": "librarian-title" },
    h("div", { class: "view-head" },
      h("div", {}, h("h1", { id: "librarian-title", text: "Library stock" }),
        h("p", { class: "lead", text: "Register titles and stock copies. Waiting reservations get new copies first." }))),
    registerForm((book) => upsert(book, true)),
    h("section", { class: "card", "aria-labelledby": "stock-title" },
      h("div", { class: "view-head" }, h("h2", { id: "stock-title", text: "Stock per title" }), reload),
      pageMessage,
      h("table", { class: "table stock-table", id: "stock" },
        h("caption", { class: "visually-hidden", text: "Stock per title: title, author, ISBN, copies in stock, and a way to add copies" }),
        h("colgroup", {}, ["title", "author", "isbn", "stock", "add"].map((name) => h("col", { class: `col-${name}` }))),
        h("thead", {}, h("tr", {}, ["Title", "Author", "ISBN", "In stock", "Add copies"].map((t) => h("th", { scope: "col", text: t })))),
        body),
      empty,
      h("div", { class: "row" }, more)));
  load();
  return { el, dispose() {} };
}
