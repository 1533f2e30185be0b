// The catalogue: every title (GET /books, page by page) with a Reserve
// button for customers.

import { get, newKey, post } from "./api.js";
import { busy, h, messageArea, say } from "./dom.js";

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
  const el = h("section", { class: "view catalogue", "aria-labelledby": "catalogue-title" },
    h("div", { class: "view-head" },
      h("div", {}, h("h1", { id: "catalogue-title", text: "Catalogue" }),
        h("p", { class: "lead", text: canReserve
          ? "Reserve a title and we deliver a copy to your door."
          : "Every title in the library." }))),
    pageMessage, list, empty, h("div", { class: "row" }, more));

  function bookCard(book) {
    const message = messageArea();
    const stock = h("p", { class: "meta stock", text: stockText(book.stock) });
    const card = h("li", { class: "card book", "data-book-id": book.id },
      h("h3", { class: "book-title", text: book.title }),
      h("p", { class: "meta", text: `${book.author} · ISBN ${book.isbn}` }),
      stock);
    if (canReserve) {
      // One key per intended reservation: a retry after a failure (say a
      // 503 or a lost answer) reuses it, so it cannot reserve twice.
      let key = newKey();
      const button = h("button", { type: "button", class: "button", "data-action": "reserve", text: "Reserve" });
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
      card.append(h("div", { class: "row" }, button), message);
    }
    return card;
  }

  let cursor = null;
  async function load() {
    try {
      const path = cursor ? `/books?limit=${PAGE}&cursor=${encodeURIComponent(cursor)}` : `/books?limit=${PAGE}`;
      const page = await get(path);
      list.append(...page.items.map(bookCard));
      cursor = page.next;
      more.hidden = !cursor;
      empty.hidden = list.children.length > 0;
      say(pageMessage, "");
    } catch (error) {
      say(pageMessage, `The catalogue could not be loaded. ${error.message}`, "error");
    }
  }
  more.addEventListener("click", () => busy(more, load));
  load();
  return { el, dispose() {} };
}
