// The librarian's trace of one reservation (SPEC §10): every event of it, from
// every service, in the order the event log keeps them
// (GET /reservations/{id}/events, like `make events ID=`).
//
// The log is read from a little before the reservation was made (its
// created_at, from GET /reservations/{id}), so the gateway scans only what
// came after; the gateway bounds each page of the scan, and "Show more"
// goes on from where it stopped. #/trace/<id> opens a reservation's trace.

import { fieldErrors, get, withQuery } from "./api.js";
import { busy, clear, field, focusOn, h, messageArea, say, showError } from "./dom.js";

const PAGE = 100;
const BEFORE_MS = 5 * 60 * 1000; // start the scan this long before the reservation was made
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const SERVICES = {
  reservation: "Reservation", product: "Product", delivery: "Delivery", mypage: "MyPage", gateway: "Gateway",
  notification: "Notification",
};

// Events of one request come within milliseconds of each other: shown to the millisecond.
const precise = new Intl.DateTimeFormat(undefined, { year: "numeric", month: "short", day: "numeric",
  hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3 });

function when(iso) {
  const date = new Date(iso || "");
  if (Number.isNaN(date.getTime())) return h("span", { text: iso || "—" });
  return h("time", { datetime: iso, text: precise.format(date) });
}

function idFromLocation() {
  const match = location.hash.match(/^#\/trace\/([^/?#]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

function value(v) {
  if (v === null || v === undefined) return "—";
  return typeof v === "string" ? v : JSON.stringify(v);
}

/** The event's own fields, as a short list of name: value. */
function fieldList(fields) {
  const names = Object.keys(fields || {});
  if (!names.length) return h("span", { class: "meta", text: "—" });
  return h("dl", { class: "facts event-fields" },
    names.map((name) => [h("dt", { text: name }), h("dd", { text: value(fields[name]) })]));
}

function row(item) {
  return h("tr", { "data-event-type": item.event_type, "data-producer": item.producer, "data-event-id": item.event_id || "" },
    h("td", { class: "when", "data-label": "Time" }, when(item.occurred_at)),
    h("td", { "data-label": "Service" }, SERVICES[item.producer] || item.producer),
    h("th", { scope: "row", class: "event-type", "data-label": "Event" }, item.event_type),
    h("td", { "data-label": "Correlation id" }, h("code", { class: "id", text: item.correlation_id || "—" })),
    h("td", { "data-label": "Fields" }, fieldList(item.fields)));
}

export function render() {
  const id = field("Reservation id", { name: "reservation_id", id: "trace-id", required: true, maxlength: 36,
    autocomplete: "off", spellcheck: "false", autocapitalize: "off" },
  { hint: "The 36-character id of the reservation, as the API and MyPage give it." });
  const message = messageArea();
  message.id = "trace-message";
  const submit = h("button", { type: "submit", class: "button", text: "Show its events" });
  const form = h("form", { class: "card form", id: "trace-form", novalidate: true, "aria-labelledby": "trace-form-title" },
    h("h2", { id: "trace-form-title", text: "Which reservation?" }),
    id.wrapper, h("div", { class: "row" }, submit), message);

  const resultTitle = h("h2", { id: "trace-result-title", text: "Events" });
  const summary = h("p", { class: "meta", id: "trace-summary", "aria-live": "polite" });
  const rows = h("tbody", { id: "trace-rows" });
  const more = h("button", { type: "button", class: "button quiet", id: "trace-more", hidden: true, text: "Show more events" });
  const moreMessage = messageArea();
  const result = h("section", { class: "card", id: "trace-result", hidden: true, "aria-labelledby": "trace-result-title" },
    resultTitle, summary,
    h("table", { class: "table trace-table", id: "trace-events" },
      h("caption", { class: "visually-hidden", text: "The reservation's events, oldest first: time, service, event, correlation id and the event's fields" }),
      h("colgroup", {}, ["when", "service", "event", "correlation", "fields"].map((name) => h("col", { class: `col-${name}` }))),
      h("thead", {}, h("tr", {}, ["Time", "Service", "Event", "Correlation id", "Fields"].map((t) => h("th", { scope: "col", text: t })))),
      rows),
    h("div", { class: "row" }, more), moreMessage);

  let shown = { id: null, next: null, count: 0, about: "" };

  function describeCount() {
    const n = shown.count;
    say(summary, `${n} event${n === 1 ? "" : "s"}, oldest first${shown.next ? " so far" : ""}.${shown.about}`);
  }

  async function page(reservationId, params) {
    const answer = await get(withQuery(`/reservations/${encodeURIComponent(reservationId)}/events`, { limit: PAGE, ...params }));
    rows.append(...answer.items.map(row));
    shown.count += answer.items.length;
    shown.next = answer.next;
    more.hidden = !answer.next;
    describeCount();
  }

  async function trace(reservationId) {
    say(message, "");
    showError(id, "");
    if (!UUID.test(reservationId)) {
      showError(id, reservationId ? "This is not a reservation id: it has 36 characters, like 0b5e8c1a-3f2d-4e6b-9a7c-1d2e3f4a5b6c."
        : "Please fill this in.");
      id.input.focus();
      return;
    }
    history.replaceState(null, "", `#/trace/${reservationId}`);
    let since = null;
    let about = "";
    try { // where the log's scan can start: a little before the reservation was made
      const reservation = await get(`/reservations/${reservationId}`);
      const made = Date.parse(reservation.created_at);
      if (!Number.isNaN(made)) since = new Date(made - BEFORE_MS).toISOString();
      about = ` ${reservation.customer}'s reservation of book ${reservation.book_id}, ${reservation.status} now.`;
    } catch (error) {
      if (error.status === 404) {
        result.hidden = true;
        say(message, "No reservation has this id. Check it and try again.", "error");
        id.input.focus();
        return;
      }
      // The reservation service is away: the log can still be read, from further back.
    }
    try {
      clear(rows);
      shown = { id: reservationId, next: null, count: 0, about };
      resultTitle.textContent = `Events of reservation ${reservationId}`;
      await page(reservationId, { since });
      result.hidden = false;
      focusOn(resultTitle);
    } catch (error) {
      result.hidden = true;
      if (error.status === 404) {
        say(message, "The event log holds no event of this reservation: it may be older than the log keeps (30 days), or not yet published.", "error");
      } else if (error.status === 400) {
        const errors = fieldErrors(error.details);
        say(message, Object.values(errors)[0] || error.message, "error");
      } else if (error.status !== 401) {
        say(message, `The events could not be read. ${error.message}`, "error");
      }
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(submit, () => trace(id.input.value.trim().toLowerCase()));
  });
  more.addEventListener("click", () => busy(more, async () => {
    say(moreMessage, "");
    const before = rows.children.length;
    try {
      await page(shown.id, { cursor: shown.next });
      const first = rows.children[before];
      if (first) focusOn(first.querySelector("th"));
    } catch (error) {
      if (error.status !== 401) say(moreMessage, `The next events could not be read. ${error.message}`, "error");
    }
  }));

  const el = h("section", { class: "view trace stack", "aria-labelledby": "trace-title" },
    h("div", { class: "view-head" },
      h("div", {}, h("h1", { id: "trace-title", text: "Trace a reservation" }),
        h("p", { class: "lead", text: "Every event of one reservation, from every service, in the order the event log keeps them." }))),
    form, result);
  el.dataset.loaded = "true";
  const wanted = idFromLocation();
  if (wanted) {
    id.input.value = wanted;
    queueMicrotask(() => busy(submit, () => trace(wanted.toLowerCase())));
  }
  return { el, dispose() {} };
}
