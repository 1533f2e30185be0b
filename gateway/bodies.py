"""A request's body, read at most ``MAX_BODY_BYTES`` of it: a JSON object
(``json_body``: 413, 415, 400 otherwise) or an OAuth 2 token request sent as a
form (``form_grant``: RFC 6749's errors otherwise)."""
import json
from urllib.parse import parse_qsl

from marshmallow import ValidationError
from werkzeug.datastructures import MultiDict

from common import errors
from gateway.errors import OAuthError, PayloadTooLarge, UnsupportedMediaType

MAX_BODY_BYTES = 64 * 1024
FORM = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 20


def form_grant(request, schemas_by_grant):
    """An OAuth 2 token request (RFC 6749 §4.3, §6) from a form-encoded body,
    loaded by the schema of its ``grant_type`` (``schemas_by_grant``);
    OAuthError in §5.2's terms otherwise. As §3.2 says: a parameter without
    a value is as if it were not sent, unknown parameters are ignored, and
    none may be sent twice. The client: ``client_id`` in the body or HTTP
    Basic; this server has public clients only, so a client secret cannot be
    right (``invalid_client``)."""
    try:
        raw = _raw_body(request)
        form = MultiDict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True, errors="strict",
                                   max_num_fields=MAX_FORM_FIELDS))
    except errors.BookRentalError as error:
        raise OAuthError("invalid_request", error.message) from None
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "the body is not a valid form (UTF-8, URL-encoded)") from None
    repeated = sorted(name for name, values in form.lists() if len(values) > 1)
    if repeated:
        raise OAuthError("invalid_request", f"a parameter was sent more than once: {', '.join(repeated)[:200]}")
    values = {name: value for name, value in form.items() if value != ""}
    client_id = _client_of(request, values)
    grant_type = values.get("grant_type")
    if grant_type is None:
        raise OAuthError("invalid_request", "grant_type is missing: password or refresh_token")
    if grant_type not in schemas_by_grant:
        raise OAuthError("unsupported_grant_type", f"this server grants {' and '.join(schemas_by_grant)} only")
    try:
        grant = schemas_by_grant[grant_type]().load(values)
    except ValidationError as error:
        problems = "; ".join(f"{name}: {' '.join(map(str, messages)) if isinstance(messages, list) else messages}"
                             for name, messages in sorted(error.messages.items()))
        raise OAuthError("invalid_request", problems[:300]) from None
    if grant.get("scope"):
        raise OAuthError("invalid_scope", "this server has no scopes; leave scope out")
    grant["client_id"] = client_id
    return grant


def _client_of(request, values):
    """The client_id the request names (body or HTTP Basic), or None."""
    if values.get("client_secret") is not None:
        raise OAuthError("invalid_client", "this server has public clients only: send no client secret", 401)
    client_id = values.get("client_id")
    header = request.headers.get("Authorization", "")
    if header[:6].lower() == "basic ":
        credentials = request.authorization
        if credentials is None or credentials.type != "basic" or not credentials.username:
            raise OAuthError("invalid_client", "the client's HTTP Basic credentials are malformed", 401)
        if credentials.password:
            raise OAuthError("invalid_client", "this server has public clients only: send no client secret", 401)
        if client_id is not None and client_id != credentials.username:
            raise OAuthError("invalid_request", "client_id differs from the HTTP Basic client")
        client_id = credentials.username
    if client_id is not None and not (0 < len(client_id) <= 64 and client_id.isprintable()):
        raise OAuthError("invalid_client", "client_id must be 1 to 64 printable characters", 401)
    return client_id


def _raw_body(request):
    """The body's bytes, at most MAX_BODY_BYTES (413 past them)."""
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the body is larger than {MAX_BODY_BYTES} bytes", limit=MAX_BODY_BYTES)
    if length is None and "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        stream = request.environ["wsgi.input"]  # eventlet de-chunks; werkzeug would read nothing
    else:
        stream = request.stream
    raw = stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the body is larger than {MAX_BODY_BYTES} bytes", limit=MAX_BODY_BYTES)
    return raw


def json_body(request):
    """The body as a JSON object. A body that says it is anything but JSON is
    refused with 415 (``application/json``, with or without a charset, or any
    ``application/*+json``; a body without a Content-Type is read as JSON)."""
    mimetype = request.mimetype
    if mimetype and mimetype != "application/json" and not (
            mimetype.startswith("application/") and mimetype.endswith("+json")):
        raise UnsupportedMediaType("send the body as application/json", **{"Content-Type": [mimetype[:100]]})
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType("send the body in UTF-8", **{"Content-Type": [f"charset={charset[:40]}"]})
    raw = _raw_body(request)
    if not raw.strip():
        raise errors.BadRequest("send a JSON object as the body")
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise errors.BadRequest("the body is not valid UTF-8") from None
    except RecursionError:
        raise errors.BadRequest("the body is nested too deeply") from None
    except ValueError:
        raise errors.BadRequest("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise errors.BadRequest("the body must be a JSON object")
    _refuse_lone_surrogates(body)
    return body


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def _refuse_lone_surrogates(body):
    """JSON may escape half a UTF-16 pair ("\\ud800"); Python keeps it as a
    string no database or hash can encode. Refused here, field by field."""
    problems = {}
    for key, value in body.items():
        if not _encodable(key):
            problems["_schema"] = ["a field name is not valid Unicode text (a lone surrogate)"]
        elif not _encodable(value):
            problems[key] = ["not valid Unicode text (a lone surrogate)"]
    if problems:
        raise errors.BadRequest("the request is not valid", **problems)


def _encodable(value):
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False
