"""Business errors shared by the domains, the services and the gateway.

They cross Nameko RPC by name (``RemoteError.exc_type``), and the gateway
maps each name to an HTTP status, so a name here is part of the contract.
"""


class BookRentalError(Exception):
    code = "error"

    def __init__(self, message, **details):
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(BookRentalError):
    code = "bad_request"


class NotFound(BookRentalError):
    code = "not_found"


class NotAllowed(BookRentalError):
    """The action is not allowed in the current state (HTTP 409)."""

    code = "conflict"


class Unavailable(BookRentalError):
    """A service needed to do this cannot be reached; nothing changed."""

    code = "unavailable"


EXPECTED = (BadRequest, NotFound, NotAllowed, Unavailable)
