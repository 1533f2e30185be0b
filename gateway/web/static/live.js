// Live MyPage: Server-Sent Events from the gateway, and what to do when
// they fail.
//
// 1. POST /mypage/events/ticket (with the bearer token) → a ticket valid for
//    30 seconds, once. EventSource cannot send a header, and the token must
//    stay out of URLs; the ticket may be in one.
// 2. new EventSource("/mypage/events?ticket=...").
// 3. On "ready" (the gateway has subscribed us) the page refetches MyPage:
//    anything that changed while we were away shows now, and anything that
//    changes from now on is pushed. On "mypage_changed" it refetches again.
// 4. When the stream breaks (gateway restarted, network gone), we close it
//    and start again from 1 with a growing pause (0.5 s to 5 s), since a
//    ticket cannot be used twice. After two failures in a row we also poll
//    GET /mypage every 3 s until the stream is back.

import { request } from "./api.js";

const POLL_MS = 3000;
const MAX_PAUSE_MS = 5000;

/**
 * connectLive({onChange(reason), onState(state)}) → {close()}
 * state: "connecting" | "live" | "reconnecting" | "polling"
 */
export function connectLive({ onChange, onState = () => {} }) {
  let source = null;
  let timer = null;
  let poller = null;
  let failures = 0;
  let stopped = false;

  const setState = (state) => {
    if (!stopped) onState(poller && state !== "live" ? "polling" : state);
  };

  function startPolling() {
    if (poller || stopped) return;
    poller = setInterval(() => onChange("poll"), POLL_MS);
  }

  function stopPolling() {
    if (poller) clearInterval(poller);
    poller = null;
  }

  function retryLater() {
    if (stopped) return;
    failures += 1;
    if (failures >= 2) startPolling();
    setState("reconnecting");
    const pause = Math.min(500 * 2 ** (failures - 1), MAX_PAUSE_MS);
    clearTimeout(timer);
    timer = setTimeout(open, pause);
  }

  async function open() {
    timer = null;
    if (stopped) return;
    if (typeof EventSource === "undefined") {
      startPolling();
      setState("polling");
      onChange("poll");
      return;
    }
    let ticket;
    try {
      ticket = (await request("POST", "/mypage/events/ticket")).ticket;
    } catch (error) {
      if (error.status === 401 || error.status === 403) return; // signed out: the app takes over
      retryLater();
      return;
    }
    if (stopped) return;
    const stream = new EventSource(`/mypage/events?ticket=${encodeURIComponent(ticket)}`);
    source = stream;
    stream.addEventListener("ready", () => {
      failures = 0;
      stopPolling();
      setState("live");
      onChange("connected");
    });
    stream.addEventListener("mypage_changed", () => onChange("changed"));
    stream.addEventListener("expired", () => {
      // The sign-in behind the ticket has expired: asking for a new ticket
      // answers 401, and the app asks the person to sign in again.
      stream.close();
      source = null;
      open();
    });
    stream.addEventListener("error", () => {
      // EventSource would retry with the same (now used) ticket: do it ourselves.
      stream.close();
      if (source === stream) source = null;
      retryLater();
    });
  }

  setState("connecting");
  open();

  return {
    close() {
      stopped = true;
      clearTimeout(timer);
      stopPolling();
      if (source) source.close();
      source = null;
    },
  };
}
