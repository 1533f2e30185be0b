// The catalogue: every title (GET /books, page by page) with a Reserve
// button for customers, and a search box where the gateway offers
// GET /books?q= (titles whose title, author or ISBN contains it).

import { get, newKey, post, withQuery } from "./api.js";
import { busy, h, messageArea, say } from "./dom.js";
import { has } from "./features.js";

const PAGE = 50;

function stockText(stock) {
  if (stock > 0) return `${stock} in stock`;
  return "None in stock: you will join the waiting list";
}

export function render({ session }) {
  const canReserve = session && session.role === "customer";
  const pageMessage = messageArea();
  const list = h("ul", { class: "grid books", id: "books" });
  const more = h("button", { type: "button", class: "button quiet", hidden: true, text: "Show more titles" });
  const empty = h("p", { class: "empty", hidden: true, text: "The catalogue is empty for now." });
  let query = "";

  function bookCard(book) {
    const message = messageArea();
    const card = h("li", { class: "card book", "data-book-id": book.id },
      h("h2", { class: "book-title", text: book.title }),
      h("p", { class: "meta" }, h("span", { class: "author", text: book.author }), " · ISBN ",
        h("span", { class: "isbn", text: book.isbn })),
      h("p", { class: "meta stock", text: stockText(book.stock) }));
    if (canReserve) {
      // One key per intended reservation: a retry after a failure (say a
      // 503 or a lost answer) reuses it, so it cannot reserve twice.
      let key = newKey();
      const button = h("button", { type: "button", class: "button", "data-action": "reserve", text: "Reserve",
        "aria-describedby": `book-${book.id}-title` });
      card.querySelector(".book-title").id = `book-${book.id}-title`;
      button.addEventListener("click", () => busy(button, async () => {
        say(message, "");
        try {
          await post("/reservations", { book_id: book.id }, { headers: { "Idempotency-Key": key } });
          key = newKey();
          say(message, ["Reserved. Follow it on ", h("a", { href: "#/mypage", text: "MyPage" }), "."], "ok");
        } catch (error) {
          say(message, error.message, "error");
        }
      }));
      card.append(h("div", { class: "row actions" }, button), message);
    }
    return card;
  }

  let cursor = null;
  let asked = 0; // answers to an older question are dropped
  async function load(fresh = false) {
    const mine = ++asked;
    if (fresh) cursor = null;
    try {
      const page = await get(withQuery("/books", { q: query || null, limit: PAGE, cursor }));
      if (mine !== asked) return;
      if (fresh) list.replaceChildren();
      list.append(...page.items.map(bookCard));
      cursor = page.next;
      more.hidden = !cursor;
      empty.textContent = query ? `No title, author or ISBN contains “${query}”.` : "The catalogue is empty for now.";
      empty.hidden = list.children.length > 0;
      say(pageMessage, "");
    } catch (error) {
      if (mine === asked) say(pageMessage, `The catalogue could not be loaded. ${error.message}`, "error");
    }
    el.dataset.loaded = "true";
  }
  more.addEventListener("click", () => busy(more, () => load()));

  let search = null;
  if (has("search")) {
    const input = h("input", { type: "search", name: "q", id: "catalogue-q", maxlength: 200, autocomplete: "off",
      placeholder: "Title, author or ISBN" });
    const go = h("button", { type: "submit", class: "button", text: "Search" });
    const status = h("p", { class: "meta", id: "catalogue-q-status", role: "status", "aria-live": "polite" });
    search = h("form", { class: "search", role: "search", id: "catalogue-search", "aria-label": "Search the catalogue" },
      h("label", { for: "catalogue-q", class: "field-label", text: "Search the catalogue" }),
      h("div", { class: "row search-row" }, input, go), status);
    search.addEventListener("submit", (event) => {
      event.preventDefault();
      busy(go, async () => {
        query = input.value.trim();
        await load(true);
        status.textContent = query ? `${list.children.length}${cursor ? "+" : ""} found for “${query}”.` : "";
      });
    });
  }

  const el = h("section", { class: "view catalogue", "aria-labelledby": "catalogue-title" },
    h("div", { class: "view-head" },
      h("div", {}, h("h1", { id: "catalogue-title", text: "Catalogue" }),
        h("p", { class: "lead", text: canReserve
          ? "Reserve a title and we deliver a copy to your door."
          : "Every title in the library." }))),
    search, pageMessage, list, empty, h("div", { class: "row" }, more));
  load();
  return { el, dispose() {} };
}
