// The notices sent to the customer (GET /notifications, SPEC §5 and §9),
// newest first, a page at a time: "Show older notices" follows `next`.

import { get, withQuery } from "./api.js";
import { busy, focusOn, h, messageArea, say, timeEl } from "./dom.js";

const PAGE = 50;
const KINDS = {
  confirmed: "Confirmed",
  shipped: "Shipped",
  delivered: "Delivered",
  due_soon: "Due soon",
  overdue: "Overdue",
  canceled: "Canceled",
};

export function render() {
  const pageMessage = messageArea();
  const list = h("ul", { class: "list notices", id: "notices", "aria-labelledby": "notices-title" });
  const empty = h("p", { class: "empty", hidden: true, text: "No notices yet. We write when something happens to your reservations." });
  const older = h("button", { type: "button", class: "button quiet", id: "notices-older", hidden: true, text: "Show older notices" });

  function item(notice) {
    return h("li", { class: "card notice", "data-notice-id": notice.id, "data-kind": notice.kind,
      "data-reservation-id": notice.reservation_id || "" },
    h("div", { class: "title-row" },
      h("h2", { class: "notice-subject", text: notice.subject || KINDS[notice.kind] || notice.kind }),
      h("span", { class: "badge", "data-status": notice.kind, text: KINDS[notice.kind] || notice.kind })),
    h("p", { class: "meta" }, "Sent ", timeEl(notice.sent_at)));
  }

  let cursor = null;
  async function load() {
    try {
      const page = await get(withQuery("/notifications", { limit: PAGE, cursor }));
      const before = list.children.length;
      list.append(...page.items.map(item));
      cursor = page.next;
      older.hidden = !cursor;
      empty.hidden = list.children.length > 0;
      say(pageMessage, "");
      return before;
    } catch (error) {
      if (error.status !== 401) say(pageMessage, `The notices could not be loaded. ${error.message}`, "error");
      return null;
    } finally {
      el.dataset.loaded = "true";
    }
  }
  older.addEventListener("click", () => busy(older, async () => {
    const before = await load();
    const first = before === null ? null : list.children[before];
    if (first) focusOn(first.querySelector(".notice-subject"));
  }));

  const el = h("section", { class: "view notices-view", "aria-labelledby": "notices-title" },
    h("div", { class: "view-head" },
      h("div", {}, h("h1", { id: "notices-title", text: "Notices" }),
        h("p", { class: "lead", text: "What we told you about your reservations, newest first." }))),
    pageMessage, list, empty, h("div", { class: "row" }, older));
  load();
  return { el, dispose() {} };
}
