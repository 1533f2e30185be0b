"""Where a failure becomes an HTTP answer (``response_for``): the gateway's
own errors (401, 403, 413, 415, 429, OAuth 2's), the spec's error body, and
``json_response``, the one way an answer is written."""
import json
import logging

from marshmallow import ValidationError
from nameko.exceptions import ContainerBeingKilled
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from common import errors
from gateway.ratelimit import retry_after

log = logging.getLogger("gateway.http")  # "unexpected error" lines keep the logger they always had

RETRY_AFTER_SECONDS = 5


class Unauthorized(errors.BookRentalError):
    code = "unauthorized"


class Forbidden(errors.BookRentalError):
    code = "forbidden"


class TooManyRequests(errors.BookRentalError):
    code = "rate_limited"

    def __init__(self, message, wait):
        super().__init__(message, retry_after=retry_after(wait))
        self.retry_after = wait


class OAuthError(errors.BookRentalError):
    """An answer of the OAuth 2 token endpoint to a form-encoded request, in
    RFC 6749 §5.2's form: ``{"error": "invalid_grant", "error_description"}``."""

    code = "oauth"

    def __init__(self, error, description, status=400):
        super().__init__(description)
        self.error = error
        self.status = status


class PayloadTooLarge(errors.BookRentalError):
    code = "payload_too_large"


class UnsupportedMediaType(errors.BookRentalError):
    code = "unsupported_media_type"


STATUS = {
    errors.BadRequest: 400, Unauthorized: 401, Forbidden: 403, errors.NotFound: 404,
    errors.NotAllowed: 409, PayloadTooLarge: 413, UnsupportedMediaType: 415, TooManyRequests: 429,
    errors.Unavailable: 503,
}
CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
         405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
         429: "rate_limited", 500: "internal", 503: "unavailable"}


def json_response(payload, status=200, headers=None):
    response = Response(json.dumps(payload), status=status, mimetype="application/json", headers=headers)
    # An answer may carry a token or someone's reservations: no cache keeps it,
    # and no browser reads it as anything but JSON.
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


def error_response(status, message, code=None, details=None, headers=None):
    body = {"error": {"code": code or CODES.get(status, "error"), "message": message, "details": details or {}}}
    return json_response(body, status, headers)


def response_for(exc):
    """The one place an exception becomes an HTTP answer."""
    if isinstance(exc, ValidationError):
        return error_response(400, "the request is not valid", "bad_request", _details(exc.messages))
    if isinstance(exc, OAuthError):
        headers = {"Pragma": "no-cache"}
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="bookrental"'
        return json_response({"error": exc.error, "error_description": exc.message}, exc.status, headers)
    if isinstance(exc, errors.BookRentalError):
        status = next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 500)
        headers = {}
        if status == 503:
            headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        if status == 429:
            headers["Retry-After"] = str(retry_after(exc.retry_after))
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="bookrental"'
        return error_response(status, exc.message, exc.code, exc.details, headers)
    if isinstance(exc, ContainerBeingKilled):
        # The gateway is stopping (a deploy, a crash): nothing was started,
        # and another replica, or this one restarted, answers a retry.
        return error_response(503, "the gateway is restarting; nothing changed", "unavailable",
                              headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    if isinstance(exc, HTTPException):
        headers = {"Allow": ", ".join(exc.valid_methods)} if getattr(exc, "valid_methods", None) else None
        return error_response(exc.code, exc.description or exc.name, CODES.get(exc.code), headers=headers)
    log.error("unexpected error", exc_info=(type(exc), exc, exc.__traceback__))
    return error_response(500, "something went wrong on our side; it has been logged", "internal")


def _details(messages):
    return messages if isinstance(messages, dict) else {"_schema": messages}
