// The courier's page: deliveries to ship (preparing) and to deliver
// (shipped), with the button for each step. Refreshed every few seconds.

import { allPages, get, post } from "./api.js";
import { busy, focusOn, h, messageArea, say } from "./dom.js";

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
  const headings = {
    preparing: h("h2", { id: "to-ship-title", text: "To ship" }),
    shipped: h("h2", { id: "to-deliver-title", text: "On the way" }),
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

  // Where the book goes (SPEC §5: `address` on a delivery, null when the
  // customer gave none); nothing is said when this gateway's API has no such field.
  function where(delivery) {
    if (!("address" in delivery)) return null;
    return h("p", { class: "address" }, h("span", { class: "address-label", text: "Deliver to " }),
      delivery.address
        ? h("span", { class: "address-text", text: delivery.address })
        : h("span", { class: "address-text missing", text: "no address given: ask the library" }));
  }

  function card(delivery, title) {
    const step = STEPS[delivery.status];
    const headingId = `delivery-${delivery.id}-title`;
    const heading = h("h3", { class: "book-title", id: headingId, text: title || `Book #${delivery.book_id}` });
    const message = messageArea();
    const note = notes.get(delivery.id);
    if (note) say(message, note[0], note[1]);
    const button = h("button", { type: "button", class: "button", "data-action": step.action, text: step.label,
      "aria-describedby": headingId });
    button.addEventListener("click", () => busy(button, async () => {
      say(message, "");
      try {
        await post(`/deliveries/${encodeURIComponent(delivery.id)}/${step.action}`);
        notes.delete(delivery.id);
        say(message, step.done, "ok");
        say(pageMessage, `${step.done.replace(/\.$/, "")}: ${heading.textContent}.`, "ok");
        const list = lists[delivery.status];
        const index = [...list.children].indexOf(button.closest("li"));
        if (running) await running; // a refresh begun before the change would not show it
        await refresh();
        // The card has moved on: the keyboard goes to the next one of the same list.
        const next = list.children[Math.min(index, list.children.length - 1)];
        focusOn((next && next.querySelector("button[data-action]")) || headings[delivery.status]);
      } catch (error) {
        notes.set(delivery.id, [error.message, "error"]);
        say(message, error.message, "error");
      }
    }));
    return h("li", { class: "card delivery", "data-delivery-id": delivery.id, "data-reservation-id": delivery.reservation_id,
      "data-status": delivery.status },
    h("div", { class: "title-row" }, heading,
      h("span", { class: "badge", "data-status": delivery.status, text: delivery.status })),
    where(delivery),
    h("p", { class: "meta" }, "For ", h("span", { class: "customer", text: delivery.customer }),
      ` · reservation ${delivery.reservation_id.slice(0, 8)}`),
    h("div", { class: "row actions" }, button),
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
          const signature = JSON.stringify([items.map((d) => [d.id, d.status]), Boolean(next)]);
          if (shown[status] === signature) continue;
          const names = await Promise.all(items.map((delivery) => titleOf(delivery.book_id)));
          lists[status].replaceChildren(...items.map((delivery, index) => card(delivery, names[index])));
          shown[status] = signature;
          empties[status].hidden = items.length > 0;
          if (next) lists[status].append(h("li", { class: "meta", text: "More deliveries are waiting; they show once these are done." }));
        }
        if (pageMessage.classList.contains("error")) say(pageMessage, ""); // a failed load is over
      } catch (error) {
        if (error.status !== 401) say(pageMessage, `The deliveries could not be loaded. ${error.message}`, "error");
      } finally {
        el.dataset.loaded = "true";
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
    h("div", { class: "columns" },
      h("section", { class: "stack", "aria-labelledby": "to-ship-title" },
        headings.preparing, lists.preparing, empties.preparing),
      h("section", { class: "stack", "aria-labelledby": "to-deliver-title" },
        headings.shipped, lists.shipped, empties.shipped)));
  refresh();
  return { el, dispose: () => clearInterval(timer) };
}
