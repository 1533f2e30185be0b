// The customer's notices (GET /notifications), newest first, with "show older".

import { get } from "./api.js";
import { busy, h, messageArea, say, timeEl } from "./dom.js";

const PAGE = 20;
const LABELS = {
  confirmed: "Confirmed", shipped: "Shipped", delivered: "Delivered",
  due_soon: "Due soon", overdue: "Overdue", canceled: "Canceled",
};

export function render() {
  const message = messageArea();
  const list = h("ul", { class: "list notices", id: "notices" });
  const empty = h("p", { class: "empty", hidden: true, text: "No notices yet. We tell you here when a reservation moves." });
  const older = h("button", { type: "button", class: "button quiet", hidden: true, text: "Show older notices" });
  let next = null;

  function item(notice) {
    return h("li", { class: "card notice", "data-notice-id": notice.id, "data-kind": notice.kind,
      "data-reservation-id": notice.reservation_id },
    h("div", { class: "title-row row" }, h("h2", { class: "book-title", text: notice.subject }),
      h("span", { class: "spacer" }),
      h("span", { class: "badge", "data-status": notice.kind, text: LABELS[notice.kind] || notice.kind })),
    h("p", { class: "meta" }, timeEl(notice.sent_at)));
  }

  async function load(cursor) {
    try {
      const page = await get(`/notifications?limit=${PAGE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      if (!cursor) list.replaceChildren();
      list.append(...page.items.map(item));
      next = page.next;
      older.hidden = !next;
      empty.hidden = list.children.length > 0;
      el.dataset.loaded = "true";
      say(message, "");
    } catch (error) {
      if (error.status !== 401) say(message, `Your notices could not be loaded. ${error.message}`, "error");
    }
  }

  older.addEventListener("click", () => busy(older, () => load(next)));
  const el = h("section", { class: "view notices stack", "aria-labelledby": "notices-title" },
    h("div", { class: "view-head" },
      h("div", {}, h("h1", { id: "notices-title", text: "Notices" }),
        h("p", { class: "lead", text: "What the library told you, newest first. With an email on your account, each is mailed too." }))),
    message, list, empty, h("div", { class: "row" }, older));
  load(null);
  return { el, dispose() {} };
}
