"""The gateway's MyPage routes: the page itself (from the read model, cached
per customer in ``gateway.cache``) and its live stream (Server-Sent Events,
``gateway.live``). A mixin of ``GatewayService`` (gateway.service), which
declares the dependencies used here (``mypage``, ``caches``, ``live_pages``,
``authority``): Nameko finds the entrypoints of a service's base classes too.
"""
import json

from gateway import schemas
from gateway.errors import json_response
from gateway.http import api
from gateway.inline import inline_event_handler
from gateway.live import EVENT_SCHEMA, change, stream_response


class MyPageRoutes:
    @api("GET", "/mypage", roles={"customer"}, query=schemas.MyPageQuery, tag="mypage",
         response=schemas.MyPage, errors=(503,))
    def my_page(self, request, user, query):
        """The signed-in customer's reservations, newest first, a page at a
        time, from the read model."""
        pages, customer = self.caches.pages, user["username"]

        def fetch():
            answer = self.mypage.get(customer, query["limit"], query["cursor"])
            return {**answer, "next": schemas.keyset_cursor(answer.get("next"))}

        if not pages.enabled:
            return fetch()
        if "no-cache" in request.headers.get("Cache-Control", ""):
            pages.invalidate(customer)
        body = pages.page(customer, lambda: json.dumps(fetch()).encode(), part=(query["limit"], query["cursor"]))
        response = json_response(None)
        response.set_data(body)
        return response

    # -- live mypage (Server-Sent Events; see gateway/live.py) ---------

    @api("POST", "/mypage/events/ticket", roles={"customer"}, tag="mypage", response=schemas.EventTicket, errors=(503,))
    def mypage_events_ticket(self, request, user):
        """A ticket to open the live MyPage stream: valid for 30 seconds, once.
        EventSource cannot send a bearer token, and a token must not go into a
        URL; a ticket may."""
        return self.live_pages.issue_ticket(self.authority.tokens, user, user["exp"])

    @api("GET", "/mypage/events", query=schemas.EventStreamQuery, tag="mypage",
         response=EVENT_SCHEMA, media_type="text/event-stream", errors=(401,))
    def mypage_events(self, request, query):
        """Live MyPage, as Server-Sent Events (text/event-stream): `ready` once
        connected, then `mypage_changed` {reservation_id, book_id, status,
        delivery_status} for each change of the ticket's customer; a comment
        every 15 seconds. Refetch GET /mypage on `ready` and on each change."""
        user = self.live_pages.redeem_ticket(self.authority.tokens, query["ticket"])
        return stream_response(request, self.live_pages.subscribe(user["username"], user["until"]))

    @inline_event_handler("mypage", "mypage_changed", uses=("caches", "live_pages"), idle="no_page_held")
    def on_mypage_changed(self, event):
        """Every replica hears every change and pushes it to its own streams
        (no worker: gateway.inline)."""
        if isinstance(event, dict) and isinstance(event.get("customer"), str):
            self.caches.pages.invalidate(event["customer"])  # first: the pages refetch at once
            if self.live_pages.count(event["customer"]):
                self.live_pages.publish(event["customer"], change(event))

    def no_page_held(self):
        """No page cached and no stream open in this process: a change is
        nothing to it (the hint is dropped undecoded)."""
        return not self.caches.pages.parts and not self.live_pages.subscribers
