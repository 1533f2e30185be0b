"""The baselines of ``make bench``: bare Nameko, nothing of Book Rental.

Two services, run as processes with the same ``config.yml`` (so the same
``max_workers``, serializer and broker) as the system under test:

- ``bench_echo``: one RPC method that returns its argument, and a handler of
  ``bench_http``'s ``pinged`` event that does nothing;
- ``bench_http``: ``POST /rpc`` loads the JSON body and makes one RPC call to
  ``bench_echo`` (the floor for a route that calls one service), ``POST
  /event`` dispatches it as one event that ``bench_echo`` consumes (what one
  event hop costs bare Nameko: ``make profile``), and
  ``POST /norpc`` / ``GET /norpc`` answer without any RPC (the floor for a
  route at all); ``GET /norpc/<n>`` answers a JSON document of ``n`` bytes,
  serialized once (the floor for a route that sends a page of that size).

No authentication, no database, no logging: whatever the real routes cost on
top of these is the price of Book Rental itself. The one thing added to bare
Nameko is TCP_NODELAY on each connection, as the gateway sets it: without it
an answer sent in two writes on a reused keep-alive connection waits 40 ms
for the client's delayed ACK, and the "floor" for a 30 KB page would be a
sleep, not a cost.
"""
import json
import socket

from nameko.events import EventDispatcher, event_handler
from nameko.rpc import RpcProxy, rpc
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import WebServer
from werkzeug.wrappers import Response


class NoDelayWebServer(WebServer):
    def process_request(self, sock, address):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().process_request(sock, address)


class NoDelayHttp(HttpRequestHandler):
    server = NoDelayWebServer()


http = NoDelayHttp.decorator


_DOCUMENTS = {}


def _document(size):
    """A JSON document of ``size`` bytes (at least 16), made once."""
    if size not in _DOCUMENTS:
        _DOCUMENTS[size] = json.dumps({"padding": "x" * max(0, size - 15)}).encode()
    return _DOCUMENTS[size]


def _json(payload, status=200):
    return Response(json.dumps(payload), status=status, mimetype="application/json")


class EchoService:
    name = "bench_echo"

    @rpc
    def echo(self, value):
        return value

    @event_handler("bench_http", "pinged")
    def pinged(self, payload):
        pass


class HttpService:
    name = "bench_http"

    echo = RpcProxy("bench_echo")
    dispatch = EventDispatcher()

    @http("POST", "/rpc")
    def with_rpc(self, request):
        return _json(self.echo.echo(json.loads(request.get_data())), 202)

    @http("POST", "/event")
    def with_event(self, request):
        payload = json.loads(request.get_data())
        self.dispatch("pinged", payload)
        return _json(payload, 202)

    @http("POST", "/norpc")
    def without_rpc_post(self, request):
        return _json(json.loads(request.get_data()), 202)

    @http("GET", "/norpc")
    def without_rpc(self, request):
        return _json({"ok": True})

    @http("GET", "/norpc/<int:size>")
    def sized_without_rpc(self, request, size):
        return Response(_document(min(size, 1 << 20)), mimetype="application/json")
