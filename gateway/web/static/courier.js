// The courier's page: deliveries to ship (preparing) and to deliver
// (shipped), with the button for each step. Refreshed every few seconds.

import { allPages, get, post } from "./api.js";
import { busy, h, messageArea, say } from "./dom.js";

const REFRESH_MS = 5000;

const STEPS = {
  preparing: { action: "ship", label: "Ship", done: "Shipped." },
  shipped: { action: "deliver", label: "Mark delivered", done: "Delivered." },
};

export function render() {
  const titles = new Map(); // book id → title (a promise while asked)
  const notes = new Map(); // delivery id → [text, kind]: survives a refresh
  const pageMessage = messageArea();
  const lists = {
    preparing: h("ul", { class: "list deliveries", id: "to-ship" }),
    shipped: h("ul", { class: "list deliveries", id: "to-deliver" }),
  };
  const empties = {
    preparing: h("p", { class: "empty", hidden: true, text: "Nothing to ship right now." }),
    shipped: h("p", { class: "empty", hidden: true, text: "Nothing on the way." }),
  };
  const reload = h("button", { type: "button", class: "button quiet", text: "Refresh" });

  // Deliveries name the book by id; the title is asked once per book.
  function titleOf(bookId) {
    if (!titles.has(bookId)) {
      titles.set(bookId, get(`/books/${bookId}`).then((book) => book.title).catch(() => {
        titles.delete(bookId); // asked again next time
        return null;
      }));
    }
    return titles.get(bookId);
  }

  function card(delivery, title) {
    const step = STEPS[delivery.status];
    const heading = h("h3", { class: "book-title", text: title || `Book #${delivery.book_id}` });
    const message = messageArea();
    const note = notes.get(delivery.id);
    if (note) say(message, note[0], note[1]);
    const button = h("button", { type: "button", class: "button", "data-action": step.action, text: step.label });
    button.addEventListener("click", () => busy(button, async () => {
      say(message, "");
      try {
        await post(`/deliveries/${encodeURIComponent(delivery.id)}/${step.action}`);
        notes.delete(delivery.id);
        say(message, step.done, "ok");
        await refresh();
      } catch (error) {
        notes.set(delivery.id, [error.message, "error"]);
        say(message, error.message, "error");
      }
    }));
    return h("li", { class: "card delivery", "data-delivery-id": delivery.id, "data-reservation-id": delivery.reservation_id,
      "data-status": delivery.status },
    h("div", { class: "title-row row" }, heading, h("span", { class: "spacer" }),
      h("span", { class: "badge", "data-status": delivery.status, text: delivery.status })),
    h("p", { class: "meta", text: `For ${delivery.customer} · reservation ${delivery.reservation_id.slice(0, 8)}` }),
    h("p", { class: "address", "data-address": delivery.address || "" },
      h("span", { class: "address-label", text: "Deliver to: " }),
      delivery.address || "no address given: ask the customer"),
    h("div", { class: "row" }, button),
    message);
  }

  const shown = {}; // status → what is on screen, so an unchanged list is left alone (and keeps focus)
  let running = null;
  async function refresh() {
    if (running) return running;
    running = (async () => {
      try {
        for (const status of Object.keys(lists)) {
          const { items, next } = await allPages(`/deliveries?status=${status}&limit=100`, 5);
          const signature = JSON.stringify([items.map((d) => [d.id, d.status, d.address]), Boolean(next)]);
          if (shown[status] === signature) continue;
          const names = await Promise.all(items.map((delivery) => titleOf(delivery.book_id)));
          lists[status].replaceChildren(...items.map((delivery, index) => card(delivery, names[index])));
          shown[status] = signature;
          empties[status].hidden = items.length > 0;
          if (next) lists[status].append(h("li", { class: "meta", text: "More deliveries are waiting; they show once these are done." }));
        }
        say(pageMessage, "");
        el.dataset.loaded = "true";
      } catch (error) {
        if (error.status !== 401) say(pageMessage, `The deliveries could not be loaded. ${error.message}`, "error");
      } finally {
        running = null;
      }
    })();
    return running;
  }

  reload.addEventListener("click", () => busy(reload, refresh));
  const timer = setInterval(() => {
    if (!document.hidden) refresh();
  }, REFRESH_MS);

  const el = h("section", { class: "view courier stack", "aria-labelledby": "courier-title" },
    h("div", { class: "view-head" },
      h("div", {}, h("h1", { id: "courier-title", text: "Deliveries" }),
        h("p", { class: "lead", text: "Ship what is prepared, then mark it delivered at the door." })),
      reload),
    pageMessage,
    h("section", { class: "stack", "aria-labelledby": "to-ship-title" },
      h("h2", { id: "to-ship-title", text: "To ship" }), lists.preparing, empties.preparing),
    h("section", { class: "stack", "aria-labelledby": "to-deliver-title" },
      h("h2", { id: "to-deliver-title", text: "On the way" }), lists.shipped, empties.shipped));
  refresh();
  return { el, dispose: () => clearInterval(timer) };
}
