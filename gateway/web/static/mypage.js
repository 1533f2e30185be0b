// MyPage: every reservation of the signed-in customer, kept live.
//
// One <li class="reservation"> per reservation, carrying
// data-reservation-id and data-status exactly as GET /mypage gives them.
// The page refetches GET /mypage whenever the gateway pushes a change (see
// live.js); rows are updated in place, so an open history stays open.
//
// GET /mypage is paged, newest first (SPEC §5: `next`, or null on the last
// page): "Show older" asks for one more page, and a refetch covers as many
// pages as are on screen. Fields the API may not give yet (`due_at`,
// `overdue`, `queue_position`) are shown when they are there.

import { post, request, withQuery } from "./api.js";
import { busy, focusOn, h, messageArea, say, timeEl } from "./dom.js";
import { has } from "./features.js";
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
const OVERDUE = "This book is overdue. Please return it: you cannot reserve another until you do.";
const CANCELABLE = new Set(["requested", "waitlisted", "confirmed", "shipped"]);
const RETURNABLE = new Set(["delivered"]);
const LIVE_TEXT = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  polling: "Checking every few seconds",
};
const MAX_PAGES = 20; // what one MyPage keeps on screen: 20 pages of (by default) 100

/** Rows per page: the API's default, or ``#/mypage?limit=n`` (1 to 500) where the API pages. */
function pageSize() {
  if (!has("mypagePaging")) return null;
  const asked = Number.parseInt(new URLSearchParams(location.hash.split("?")[1] || "").get("limit"), 10);
  return asked >= 1 && asked <= 500 ? asked : null;
}

function createdAt(row) {
  return (row.history && row.history[0] && row.history[0].at) || row.updated_at || "";
}

function place(position) {
  if (position === 1) return "1st: you are next in line";
  const suffix = position % 100 >= 11 && position % 100 <= 13 ? "th" : { 1: "st", 2: "nd", 3: "rd" }[position % 10] || "th";
  return `${position}${suffix} in line`;
}

export function render() {
  const pageMessage = messageArea();
  const liveBadge = h("span", { class: "live", "data-state": "connecting", text: LIVE_TEXT.connecting });
  const list = h("ul", { class: "list reservations", id: "reservations", "aria-labelledby": "mypage-title" });
  const empty = h("p", { class: "empty", hidden: true },
    "No reservations yet. Reserve a title from the ",
    h("a", { href: "#/catalogue", text: "catalogue" }), ".");
  const older = h("button", { type: "button", class: "button quiet", id: "mypage-older", hidden: true, text: "Show older reservations" });
  const el = h("section", { class: "view mypage", "aria-labelledby": "mypage-title" },
    h("div", { class: "view-head" },
      h("div", {}, h("h1", { id: "mypage-title", text: "MyPage" }),
        h("p", { class: "lead", text: "Your reservations and where your books are. Changes show here as they happen." })),
      h("p", { class: "live-wrap" }, h("span", { class: "visually-hidden", text: "Updates: " }), liveBadge)),
    pageMessage, list, empty, h("div", { class: "row" }, older));

  const announcer = h("p", { class: "visually-hidden", role: "status", "aria-live": "polite", id: "mypage-changes" });
  const changes = [];
  el.append(announcer);
  const rows = new Map(); // reservation id → {el, update(row)}
  let loaded = false;

  function makeRow(id) {
    const titleId = `reservation-${id}-title`;
    const title = h("h2", { class: "book-title", id: titleId });
    const badge = h("span", { class: "badge status" });
    const overdueBadge = h("span", { class: "badge overdue", "data-status": "overdue", text: "overdue", hidden: true });
    const explain = h("p", { class: "explain" });
    const delivery = h("dd", { class: "delivery-status" });
    const updated = h("dd", { class: "updated" });
    const dueTerm = h("dt", { text: "Due back", hidden: true });
    const due = h("dd", { class: "due", hidden: true });
    const queueTerm = h("dt", { text: "Waiting list", hidden: true });
    const queue = h("dd", { class: "queue-position", hidden: true });
    const history = h("ol", { class: "history" });
    const message = messageArea();
    const describedBy = { "aria-describedby": titleId };
    const cancel = h("button", { type: "button", class: "button danger", "data-action": "cancel", text: "Cancel reservation", ...describedBy });
    const giveBack = h("button", { type: "button", class: "button", "data-action": "return", text: "Return book", ...describedBy });
    const renew = h("button", { type: "button", class: "button quiet", "data-action": "renew", text: "Renew", hidden: true, ...describedBy });
    const item = h("li", { class: "card reservation", "data-reservation-id": id },
      h("div", { class: "title-row" }, title, h("span", { class: "badges" }, badge, overdueBadge)),
      explain,
      h("dl", { class: "facts" },
        h("dt", { text: "Delivery" }), delivery,
        queueTerm, queue,
        dueTerm, due,
        h("dt", { text: "Updated" }), updated),
      h("details", {}, h("summary", { text: "History" }), history),
      h("div", { class: "row actions" }, cancel, giveBack, renew),
      message);

    let current = null;
    async function act(button, path, done) {
      say(message, "");
      await busy(button, async () => {
        try {
          const reservation = await post(path);
          say(message, typeof done === "function" ? done(reservation) : done, "ok");
          update({ ...current, status: reservation.status, due_at: reservation.due_at ?? current.due_at });
          refresh();
        } catch (error) {
          say(message, error.message, "error");
        }
      });
      // The button is gone (a canceled reservation cannot be canceled again):
      // the focus goes to the reservation's title, not to the top of the page.
      if (button.hidden && (document.activeElement === document.body || document.activeElement === button)) focusOn(title);
    }

    const path = (action) => `/reservations/${encodeURIComponent(id)}/${action}`;
    cancel.addEventListener("click", () => act(cancel, path("cancel"), "Canceled."));
    giveBack.addEventListener("click", () => act(giveBack, path("return"), "Returned. Thank you!"));
    renew.addEventListener("click", () => act(renew, path("renew"), (reservation) =>
      [`Renewed. Now due back on `, timeEl(reservation.due_at), "."]));

    function update(row) {
      current = row;
      const status = row.status || "requested";
      const overdue = row.overdue === true;
      item.dataset.status = status;
      item.dataset.deliveryStatus = row.delivery_status || "";
      item.dataset.overdue = String(overdue);
      title.textContent = row.title || `Book #${row.book_id}`;
      badge.dataset.status = status;
      badge.textContent = status;
      overdueBadge.hidden = !overdue;
      explain.textContent = overdue ? OVERDUE : EXPLAIN[status] || "";
      delivery.textContent = row.delivery_status || "not yet";
      updated.replaceChildren(timeEl(row.updated_at));
      const hasDue = Boolean(row.due_at);
      dueTerm.hidden = due.hidden = !hasDue;
      if (hasDue) due.replaceChildren(timeEl(row.due_at));
      const waiting = status === "waitlisted" && Number.isInteger(row.queue_position);
      queueTerm.hidden = queue.hidden = !waiting;
      queue.textContent = waiting ? place(row.queue_position) : "";
      history.replaceChildren(...(row.history || []).map((entry) =>
        h("li", {}, h("span", { class: "history-status", text: entry.status }), " · ", timeEl(entry.at))));
      cancel.hidden = !CANCELABLE.has(status);
      giveBack.hidden = !RETURNABLE.has(status);
      renew.hidden = !(has("renew") && status === "delivered" && !overdue);
    }

    return { el: item, update };
  }

  function show(reservations) {
    const sorted = [...reservations].sort((a, b) => createdAt(b).localeCompare(createdAt(a)));
    const seen = new Set();
    sorted.forEach((row, index) => {
      seen.add(row.reservation_id);
      let entry = rows.get(row.reservation_id);
      if (!entry) {
        entry = makeRow(row.reservation_id);
        rows.set(row.reservation_id, entry);
      }
      const was = entry.el.dataset.status;
      entry.update(row);
      if (loaded && was && was !== entry.el.dataset.status) {
        changes.push(`${row.title || `Book #${row.book_id}`}: ${entry.el.dataset.status}.`);
      }
      if (list.children[index] !== entry.el) list.insertBefore(entry.el, list.children[index] || null);
    });
    for (const [id, entry] of rows) {
      if (!seen.has(id)) {
        entry.el.remove();
        rows.delete(id);
      }
    }
    empty.hidden = sorted.length > 0;
    // What changed by itself is said once to screen readers (the list is not a live region: too chatty).
    if (changes.length) announcer.textContent = changes.splice(0).join(" ");
  }

  // One fetch at a time; a change that arrives during a fetch causes one more
  // fetch after it, so the page always ends on a read made after the change.
  let pages = 1; // how many pages of GET /mypage are on screen
  let again = false;
  async function fetchAll() {
    const all = [];
    let cursor = null;
    for (let page = 0; page < pages; page += 1) {
      // no-cache: the change just pushed by one gateway replica must not
      // be answered from another replica's cache that has not heard of it yet.
      const answer = await request("GET", withQuery("/mypage", { limit: pageSize(), cursor }),
        { headers: { "Cache-Control": "no-cache" } });
      all.push(...(answer.reservations || []));
      cursor = answer.next || null;
      if (!cursor) break;
    }
    return { all, next: cursor };
  }

  let running = null;
  function refresh() {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      try {
        do {
          again = false;
          try {
            const { all, next } = await fetchAll();
            show(all);
            older.hidden = !next || pages >= MAX_PAGES;
            loaded = true;
            say(pageMessage, "");
          } catch (error) {
            if (error.status === 401) return; // signed out: the app shows the sign-in page
            say(pageMessage, loaded ? `MyPage could not be brought up to date. ${error.message}` : error.message, "error");
          }
        } while (again);
      } finally {
        running = null;
        el.dataset.loaded = "true";
      }
    })();
    return running;
  }

  older.addEventListener("click", () => busy(older, async () => {
    const before = rows.size;
    pages += 1;
    await refresh();
    // The keyboard goes on from the first of the rows just shown.
    const first = list.children[before];
    if (first) focusOn(first.querySelector(".book-title"));
  }));

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
