"""The gateway's documents and web app: the OpenAPI and AsyncAPI documents,
and the web app's page and assets, each served with a strict content
security policy. A mixin of ``GatewayService`` (gateway.service): Nameko finds
the entrypoints of a service's base classes too.
"""
import mimetypes
import os

from werkzeug.security import safe_join
from werkzeug.wrappers import Response

from common.errors import NotFound
from gateway import openapi
from gateway.http import api

HERE = os.path.dirname(os.path.abspath(__file__))
WEB_ROOT = os.path.join(HERE, "web")
ASYNCAPI = os.path.join(os.path.dirname(HERE), "docs", "asyncapi.json")
JSON_OBJECT = {"type": "object"}  # a JSON document of its own standard (OpenAPI, AsyncAPI)
TEXT = {"type": "string"}  # a file of the web app
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


class WebRoutes:
    @api("GET", "/openapi.json", tag="docs", response=JSON_OBJECT)
    def openapi_document(self, request):
        """This API, described in OpenAPI 3."""
        return openapi.document()

    @api("GET", "/asyncapi.json", tag="docs", response=JSON_OBJECT, errors=(404,))
    def asyncapi_document(self, request):
        """The events between the services, described in AsyncAPI."""
        return _file_response(ASYNCAPI, "application/json")

    @api("GET", "/", tag="web", response=TEXT, media_type="text/html")
    def web_app(self, request):
        """The web app for customers, librarians and couriers."""
        return _file_response(os.path.join(WEB_ROOT, "index.html"), "text/html")

    @api("GET", "/static/<path:path>", tag="web", response=TEXT, media_type="*/*", errors=(404,))
    def static(self, request, path):
        """The web app's assets."""
        full = safe_join(os.path.join(WEB_ROOT, "static"), path)
        if full is None or not os.path.isfile(full):
            raise NotFound("no such file")
        return _file_response(full, mimetypes.guess_type(full)[0] or "application/octet-stream")


def _file_response(path, mimetype):
    try:
        with open(path, "rb") as handle:
            content = handle.read()
    except FileNotFoundError:
        raise NotFound("no such file") from None
    response = Response(content, mimetype=mimetype)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-cache"
    return response
