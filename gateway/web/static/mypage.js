// MyPage: every reservation of the signed-in customer, kept live.
//
// One <li class="reservation"> per reservation, carrying
// data-reservation-id and data-status exactly as GET /mypage gives them.
// The page refetches GET /mypage whenever the gateway pushes a change (see
// live.js); rows are updated in place, so an open history stays open.

import { post, request } from "./api.js";
import { busy, h, messageArea, say, timeEl } from "./dom.js";
import { connectLive } from "./live.js";

const EXPLAIN = {
  requested: "We have your request and are looking for a copy.",
  waitlisted: "Every copy is out. You are on the waiting list and will get the next one back.",
  confirmed: "A copy is set aside for you and will be shipped soon.",
  shipped: "Your book is on its way.",
  delivered: "Enjoy your book. Return it when you are done.",
  returned: "Returned. Thank you!",
  canceled: "This reservation was canceled.",
};
const CANCELABLE = new Set(["requested", "waitlisted", "confirmed", "shipped"]);
const RETURNABLE = new Set(["delivered"]);
const LIVE_TEXT = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  polling: "Checking every few seconds",
};

function createdAt(row) {
  return (row.history && row.history[0] && row.history[0].at) || row.updated_at || "";
}

export function render() {
  const pageMessage = messageArea();
  const liveBadge = h("span", { class: "live", "data-state": "connecting", text: LIVE_TEXT.connecting, title: "Live updates" });
  const list = h("ul", { class: "list reservations", id: "reservations", "aria-live": "polite" });
  const empty = h("p", { class: "empty", hidden: true },
    "No reservations yet. Reserve a title from the ",
    h("a", { href: "#/catalogue", text: "catalogue" }), ".");
  const el = h("section", { class: "view mypage", "aria-labelledby": "mypage-title" },
    h("div", { class: "view-head" },
      h("div", {}, h("h1", { id: "mypage-title", text: "MyPage" }),
        h("p", { class: "lead", text: "Your reservations and where your books are. Changes show here as they happen." })),
      liveBadge),
    pageMessage, list, empty);

  const rows = new Map(); // reservation id → {el, update(row)}
  let loaded = false;

  function makeRow(id) {
    const title = h("h3", { class: "book-title" });
    const badge = h("span", { class: "badge status" });
    const explain = h("p", { class: "explain" });
    const delivery = h("dd", { class: "delivery-status" });
    const updated = h("dd", { class: "updated" });
    const history = h("ol", { class: "history" });
    const message = messageArea();
    const cancel = h("button", { type: "button", class: "button danger", "data-action": "cancel", text: "Cancel reservation" });
    const giveBack = h("button", { type: "button", class: "button", "data-action": "return", text: "Return book" });
    const item = h("li", { class: "card reservation", "data-reservation-id": id },
      h("div", { class: "title-row" }, title, badge),
      explain,
      h("dl", { class: "facts" },
        h("dt", { text: "Delivery" }), delivery,
        h("dt", { text: "Updated" }), updated),
      h("details", {}, h("summary", { text: "History" }), history),
      h("div", { class: "row actions" }, cancel, giveBack),
      message);

    async function act(button, path, done) {
      say(message, "");
      await busy(button, async () => {
        try {
          const reservation = await post(path);
          say(message, done, "ok");
          update({ ...current, status: reservation.status });
          refresh();
        } catch (error) {
          say(message, error.message, "error");
        }
      });
    }

    let current = null;
    cancel.addEventListener("click", () => act(cancel, `/reservations/${encodeURIComponent(id)}/cancel`, "Canceled."));
    giveBack.addEventListener("click", () => act(giveBack, `/reservations/${encodeURIComponent(id)}/return`, "Returned. Thank you!"));

    function update(row) {
      current = row;
      const status = row.status || "requested";
      item.dataset.status = status;
      item.dataset.deliveryStatus = row.delivery_status || "";
      title.textContent = row.title || `Book #${row.book_id}`;
      badge.dataset.status = status;
      badge.textContent = status;
      explain.textContent = EXPLAIN[status] || "";
      delivery.textContent = row.delivery_status || "not yet";
      updated.replaceChildren(timeEl(row.updated_at));
      history.replaceChildren(...(row.history || []).map((entry) =>
        h("li", {}, h("span", { class: "history-status", text: entry.status }), " · ", timeEl(entry.at))));
      cancel.hidden = !CANCELABLE.has(status);
      giveBack.hidden = !RETURNABLE.has(status);
    }

    return { el: item, update };
  }

  function show(page) {
    const reservations = [...(page.reservations || [])]
      .sort((a, b) => createdAt(b).localeCompare(createdAt(a)));
    const seen = new Set();
    reservations.forEach((row, index) => {
      seen.add(row.reservation_id);
      let entry = rows.get(row.reservation_id);
      if (!entry) {
        entry = makeRow(row.reservation_id);
        rows.set(row.reservation_id, entry);
      }
      entry.update(row);
      if (list.children[index] !== entry.el) list.insertBefore(entry.el, list.children[index] || null);
    });
    for (const [id, entry] of rows) {
      if (!seen.has(id)) {
        entry.el.remove();
        rows.delete(id);
      }
    }
    empty.hidden = reservations.length > 0;
  }

  // One fetch at a time; a change that arrives during a fetch causes one more
  // fetch after it, so the page always ends on a read made after the change.
  let fetching = false;
  let again = false;
  async function refresh() {
    if (fetching) {
      again = true;
      return;
    }
    fetching = true;
    try {
      do {
        again = false;
        try {
          // no-cache: the change just pushed by one gateway replica must not
          // be answered from another replica's cache that has not heard of it yet.
          show(await request("GET", "/mypage", { headers: { "Cache-Control": "no-cache" } }));
          loaded = true;
          say(pageMessage, "");
        } catch (error) {
          if (error.status === 401) return;
          say(pageMessage, loaded ? `MyPage could not be brought up to date. ${error.message}` : error.message, "error");
        }
      } while (again);
    } finally {
      fetching = false;
    }
  }

  refresh();
  const live = connectLive({
    onChange: () => refresh(),
    onState: (state) => {
      liveBadge.dataset.state = state;
      liveBadge.textContent = LIVE_TEXT[state] || state;
    },
  });

  return { el, dispose: () => live.close() };
}
