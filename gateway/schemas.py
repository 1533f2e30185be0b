"""Every body and query the API accepts or returns, as marshmallow schemas.

Requests refuse unknown fields (no mass assignment), bound every string and
type every number; the OpenAPI document is generated from these classes.
Over 400 lines because the API has that many bodies, queries and answers:
each schema is a few lines, and one file is what gateway/openapi.py reads.
"""
import base64
import binascii
import json
import re

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate

from common import eventlog
from common import isbn as isbns
from common.lifecycle import DELIVERY_STATUSES, NOTICE_KINDS, RESERVATION_STATUSES
from gateway.auth import MIN_DISTINCT, MIN_PASSWORD, NEW_PASSWORD_PATTERN

PRINTABLE = validate.Regexp(r"^[^\x00-\x1f\x7f]*$", error="control characters are not allowed")


class StrictInteger(fields.Integer):
    """An integer that refuses "3", 3.0 and true."""

    def __init__(self, **kwargs):
        super().__init__(strict=True, **kwargs)

    def _validated(self, value):
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._validated(value)


def text(max_length, **kwargs):
    return fields.String(validate=[validate.Length(min=1, max=max_length), PRINTABLE], **kwargs)


class Trimmed(fields.String):
    """A string with the spaces around it removed before it is validated."""

    def _deserialize(self, value, attr, data, **kwargs):
        return super()._deserialize(value, attr, data, **kwargs).strip()


def email(**kwargs):
    """Where notices are mailed: an address as mail servers take it; null clears it."""
    return fields.Email(validate=validate.Length(max=254), allow_none=True,
                        metadata={"description": "where notices are mailed; null: none"}, **kwargs)


def address(**kwargs):
    """Where books go: up to 300 characters, lines allowed, no other control
    character, and something besides spaces (a value is trimmed first, so
    spaces alone, a no-break space too, are no address: the pattern says so
    in the document)."""
    kwargs.setdefault("metadata", {"description": "where books are delivered (at most 300 characters)"})
    return Trimmed(validate=[validate.Length(min=1, max=300),
                             validate.Regexp(r"^[^\x00-\x09\x0b-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x09\x0b-\x1f\x7f]*$",
                                             error="an address is some text besides spaces; control characters "
                                                   "other than line breaks are not allowed")],
                   **kwargs)


class Request(Schema):
    class Meta:
        unknown = RAISE


# -- auth -------------------------------------------------------------------

class Credentials(Request):
    username = fields.String(required=True, validate=[validate.Length(min=1, max=64), PRINTABLE])
    password = fields.String(required=True, validate=validate.Length(min=1, max=256), load_only=True)


class Registration(Request):
    # Any case, but unique in every case (gateway.models.name_taken): "Alice"
    # next to "alice" would pass for her.
    username = fields.String(required=True, validate=validate.Regexp(
        r"^[A-Za-z0-9][A-Za-z0-9_.-]{1,31}$",
        error="2 to 32 letters, digits, '.', '_' or '-', starting with a letter or digit"))
    # The length is checked here; the other rules (gateway.auth.check_new_password)
    # say why a password is too easy to guess, and the document gives them as a
    # pattern, so that what it calls valid is accepted.
    password = fields.String(required=True, load_only=True, validate=validate.Length(
        min=MIN_PASSWORD, max=256, error=f"use {MIN_PASSWORD} to 256 characters"), metadata={
            "pattern": NEW_PASSWORD_PATTERN,
            "description": f"at least {MIN_PASSWORD} characters, {MIN_DISTINCT} of them different; not a common "
                           "password; not the username dressed up with digits or punctuation"})
    email = email()
    address = address(allow_none=True)


class Grant(Schema):
    """An OAuth 2 token request, form-encoded (RFC 6749 §3.2: unknown
    parameters are ignored, not refused)."""

    class Meta:
        unknown = EXCLUDE

    client_id = fields.String(validate=[validate.Length(min=1, max=64), PRINTABLE],
                              metadata={"description": "optional: this server's clients are public (no secret)"})
    scope = fields.String(validate=validate.Length(max=256),
                          metadata={"description": "this server has no scopes: leave it out (invalid_scope)"})


class PasswordGrant(Grant):
    grant_type = fields.String(required=True, validate=validate.OneOf(["password"]))
    username = fields.String(required=True, validate=[validate.Length(min=1, max=64), PRINTABLE])
    password = fields.String(required=True, validate=validate.Length(min=1, max=256), load_only=True)


class RefreshTokenGrant(Grant):
    grant_type = fields.String(required=True, validate=validate.OneOf(["refresh_token"]))
    refresh_token = fields.String(required=True, validate=validate.Length(min=1, max=256))


GRANTS = {"password": PasswordGrant, "refresh_token": RefreshTokenGrant}


class Token(Schema):
    access_token = fields.String(required=True, metadata={"description": "a JWT, RS256, with a kid"})
    token_type = fields.String(required=True, metadata={"example": "bearer"})
    expires_in = fields.Integer(required=True, metadata={"description": "seconds"})
    refresh_token = fields.String(required=True, metadata={"description": "opaque; works once"})


class OAuthError(Schema):
    """RFC 6749 §5.2: the token endpoint's errors to a form-encoded request."""

    error = fields.String(required=True, validate=validate.OneOf([
        "invalid_request", "invalid_client", "invalid_grant", "unauthorized_client", "unsupported_grant_type",
        "invalid_scope"]))
    error_description = fields.String()


class PublicKey(Schema):
    kty = fields.String(required=True, metadata={"example": "RSA"})
    use = fields.String(required=True, metadata={"example": "sig"})
    alg = fields.String(required=True, metadata={"example": "RS256"})
    kid = fields.String(required=True)
    n = fields.String(required=True)
    e = fields.String(required=True)


class KeySet(Schema):
    keys = fields.List(fields.Nested(PublicKey), required=True)


class Account(Schema):
    username = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(["librarian", "customer", "courier"]))


class Profile(Account):
    email = fields.String(required=True, allow_none=True)
    address = fields.String(required=True, allow_none=True)


class ContactChange(Request):
    """PATCH /account: what it names changes; null clears it."""

    email = email()
    address = address(allow_none=True)


# -- books ------------------------------------------------------------------

class Isbn(fields.String):
    """An ISBN-10 or ISBN-13 (check digit checked; hyphens and spaces allowed),
    loaded as its 13 digits (``common.isbn``)."""

    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        if len(value) > 32:
            raise ValidationError("at most 32 characters")
        try:
            return isbns.to_isbn13(value)
        except ValueError as error:
            raise ValidationError(str(error)) from None


class NewBook(Request):
    # "format": "isbn" (a format of our own, OpenAPI allows them) because no
    # pattern can say "the check digit is right"; tests/security tells the
    # fuzzer how to make one.
    isbn = Isbn(required=True, validate=validate.Length(min=10, max=32), metadata={
        "format": "isbn", "example": "978-0-441-17271-9",
        "description": "an ISBN-10 or ISBN-13 whose check digit is right, hyphens and spaces allowed; "
                       "kept as its 13 digits; one title per ISBN (a second is 409)"})
    title = text(300, required=True)
    author = text(300, required=True)
    copies = StrictInteger(required=True, validate=validate.Range(min=0, max=100_000))


class Restock(Request):
    quantity = StrictInteger(required=True, validate=validate.Range(min=1, max=100_000))


class Book(Schema):
    id = fields.Integer(required=True)
    isbn = fields.String(required=True, metadata={"description": "the ISBN-13, 13 digits", "example": "9780441172719"})
    title = fields.String(required=True)
    author = fields.String(required=True)
    stock = fields.Integer(required=True)


class Page(Request):
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))
    cursor = fields.String(load_default=None, validate=validate.Regexp(r"^[0-9]{1,18}$", error="not a cursor"))


class BookQuery(Page):
    q = fields.String(load_default=None, validate=[validate.Length(max=200), PRINTABLE], metadata={
        "description": "keep the titles whose title, author or ISBN contains this, ignoring case "
                       "(an ISBN's digits may be typed with hyphens or spaces); at most 200 characters"})


class KeysetCursor(fields.String):
    """A cursor over a list kept newest first: the (moment, id) of the last
    row of the page before, opaque to clients (base64url of a JSON pair).
    Loads as that pair; ``keyset_cursor`` makes one."""

    PATTERN = r"^[A-Za-z0-9_-]{1,256}$"

    def __init__(self, metadata=None, **kwargs):
        # "format": "keyset-cursor", a format of our own like "isbn", and no
        # pattern: no pattern can say "decodes to a pair" (a fuzzer takes any
        # match for valid); tests/security tells the fuzzer how to make one.
        super().__init__(metadata={"format": "keyset-cursor", "maxLength": 256, **(metadata or {})}, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if not re.fullmatch(self.PATTERN, text):
            raise ValidationError("not a cursor")
        try:
            key = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        except (binascii.Error, ValueError):
            raise ValidationError("not a cursor") from None
        if not (isinstance(key, list) and len(key) == 2 and all(isinstance(part, str) for part in key)
                and len(key[0]) <= 40 and 1 <= len(key[1]) <= 36
                and all(re.fullmatch(r"[\x20-\x7e]*", part) for part in key)):  # printable ASCII
            raise ValidationError("not a cursor")
        return tuple(key)


def keyset_cursor(key):
    """The cursor ``KeysetCursor`` loads as ``key`` (None: no next page)."""
    if key is None:
        return None
    return base64.urlsafe_b64encode(json.dumps(list(key), separators=(",", ":")).encode()).decode().rstrip("=")


class MyPageQuery(Page):
    cursor = KeysetCursor(load_default=None, metadata={"description": "the `next` of the page before"})


class DeliveryPage(Page):
    status = fields.String(load_default=None, validate=validate.OneOf(DELIVERY_STATUSES))


def page_of(item_schema):
    return type(f"{item_schema.__name__}Page", (Schema,), {
        "items": fields.List(fields.Nested(item_schema), required=True),
        "next": fields.String(required=True, allow_none=True,
                              metadata={"description": "pass as ?cursor= for the next page; null on the last"}),
    })


# -- reservations and deliveries --------------------------------------------

class NewReservation(Request):
    book_id = StrictInteger(required=True, validate=validate.Range(min=1, max=2 ** 31 - 1))
    address = address(metadata={"description": "where the book goes; by default the account's address"})


# The header ``POST /reservations`` reads (an OpenAPI parameter): a retry with
# the same key answers the same reservation.
IDEMPOTENCY_KEY = {"name": "Idempotency-Key", "in": "header", "required": False,
                   "description": "Retrying with the same key returns the same reservation.",
                   "schema": {"type": "string", "minLength": 1, "maxLength": 128}}


class Reservation(Schema):
    id = fields.String(required=True)
    book_id = fields.Integer(required=True)
    customer = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(RESERVATION_STATUSES))
    created_at = fields.String(required=True, metadata={"format": "date-time"})
    updated_at = fields.String(required=True, metadata={"format": "date-time"})
    address = fields.String(allow_none=True, metadata={"description": "where the book goes; null: none known"})
    due_at = fields.String(required=True, allow_none=True, metadata={
        "format": "date-time", "description": "when the loan is due back (SPEC §8); null until delivered"})
    renewals = fields.Integer(required=True, metadata={"description": "times the loan has been renewed"})
    overdue = fields.Boolean(required=True, metadata={"description": "not returned by due_at"})


class Delivery(Schema):
    id = fields.String(required=True)
    reservation_id = fields.String(required=True)
    book_id = fields.Integer(required=True)
    customer = fields.String(required=True)
    address = fields.String(required=True, allow_none=True,
                            metadata={"description": "where the book goes; null when the customer gave none"})
    status = fields.String(required=True, validate=validate.OneOf(DELIVERY_STATUSES))


class HistoryEntry(Schema):
    status = fields.String(required=True)
    at = fields.String(required=True, metadata={"format": "date-time"})


class MyPageReservation(Schema):
    reservation_id = fields.String(required=True)
    book_id = fields.Integer(required=True)
    title = fields.String(required=True, allow_none=True)
    status = fields.String(required=True, allow_none=True)
    delivery_status = fields.String(required=True, allow_none=True)
    updated_at = fields.String(required=True, allow_none=True, metadata={"format": "date-time"})
    queue_position = fields.Integer(required=True, allow_none=True, metadata={
        "description": "while waitlisted, the place in the title's line (1: the next served); else null",
        "minimum": 1})
    due_at = fields.String(required=True, allow_none=True, metadata={
        "format": "date-time", "description": "when the loan is due back; null until delivered"})
    overdue = fields.Boolean(required=True, metadata={"description": "not returned by due_at"})
    history = fields.List(fields.Nested(HistoryEntry), required=True)


class MyPage(Schema):
    customer = fields.String(required=True)
    next = fields.String(required=True, allow_none=True,
                         metadata={"description": "pass as ?cursor= for the next (older) page; null on the last"})
    reservations = fields.List(fields.Nested(MyPageReservation), required=True,
                               metadata={"description": "newest first"})


# -- notices ----------------------------------------------------------------

class Notice(Schema):
    id = fields.String(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(NOTICE_KINDS))
    reservation_id = fields.String(required=True)
    subject = fields.String(required=True)
    sent_at = fields.String(required=True, metadata={"format": "date-time"})


class NoticePage(Schema):
    items = fields.List(fields.Nested(Notice), required=True, metadata={"description": "newest first"})
    next = fields.String(required=True, allow_none=True,
                         metadata={"description": "pass as ?cursor= for the next (older) page; null on the last"})


# -- live mypage (Server-Sent Events) --------------------------------------

class EventTicket(Schema):
    ticket = fields.String(required=True, metadata={"description": "pass as ?ticket= to GET /mypage/events; once"})
    expires_in = fields.Integer(required=True, metadata={"description": "seconds"})


class EventStreamQuery(Request):
    ticket = fields.String(required=True, validate=[
        validate.Length(min=1, max=2048),
        validate.Regexp(r"^[A-Za-z0-9_.=-]+$", error="not a ticket")])  # a JWT: base64url and dots


# -- the event log: one reservation's story (SPEC §10) ---------------------

class Since(fields.String):
    """The start of a time window: an ISO 8601 time, or a duration back from now."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if not text.strip():
            return None  # as if not sent: the default window
        if len(text) > 64:
            raise ValidationError("use at most 64 characters")
        try:
            return eventlog.since(text)
        except ValueError:
            raise ValidationError("an ISO 8601 time (2026-12-06T22:00:00Z) or a duration back "
                                  "from now such as 90m, 6h, 2D") from None


class EventLogPage(Page):
    since = Since(load_default=None, metadata={
        "description": "read the log from this moment: an ISO 8601 time, or a duration back from now "
                       "(90m, 6h, 2D); by default the last 30 days. Ignored with `cursor`",
        "example": "6h", "maxLength": 64,
        "anyOf": [{"type": "string", "pattern": eventlog.DURATION_PATTERN}, {"type": "string", "format": "date-time"}]})


class LoggedEvent(Schema):
    occurred_at = fields.String(required=True, allow_none=True, metadata={"format": "date-time"})
    producer = fields.String(required=True, metadata={"description": "the service that published it"})
    event_type = fields.String(required=True)
    correlation_id = fields.String(required=True, allow_none=True,
                                   metadata={"description": "the HTTP request or RPC call that caused it"})
    event_id = fields.String(required=True, allow_none=True)
    own_fields = fields.Dict(required=True, data_key="fields",
                             metadata={"description": "the event's own fields (book_id, customer, status...)"})


class EventLogStory(Schema):
    items = fields.List(fields.Nested(LoggedEvent), required=True, metadata={"description": "in log order"})
    next = fields.String(required=True, allow_none=True, metadata={
        "description": "pass as ?cursor= to read on from there (the scan of one page is bounded); "
                       "null once the log's end is reached"})


# -- errors and health ------------------------------------------------------

class ErrorDetail(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Dict(required=True)


class Error(Schema):
    error = fields.Nested(ErrorDetail, required=True)


class Health(Schema):
    status = fields.String(required=True)
    checks = fields.Dict(required=True)


UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def is_uuid(value):
    return bool(UUID.match(value or ""))


