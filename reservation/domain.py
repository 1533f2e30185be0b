"""The life of a reservation, in one place.

    requested ─┬─> confirmed ─> shipped ─> delivered ─> returned
               └─> waitlisted ─┘
    requested, waitlisted, confirmed, shipped ─> canceled

A reservation learns what happened to it from other services' events
(a copy allocated, the delivery shipped...). Events can arrive late, twice
or out of order, so every such step only ever moves a reservation forward:
an event that would move it back, or touch a finished one, changes nothing.
The customer's own actions (cancel, return) are refused with ``NotAllowed``
when the state does not allow them.

Each method returns the events the change causes, ``[(event_type, fields)]``;
the service writes them to the outbox in the same transaction as the change
(``common.outbox.emit_all``).

A delivered reservation is a loan (SPEC §8): it has a ``due_at``, may be
renewed, and falls overdue; ``LendingRules`` holds the settings and the
checks a new reservation must pass.

The cancel of a reservation that may have a delivery spans two services
(SPEC §1.5); ``CancelIntent`` below is how it stays whole or absent after
any crash (docs/reliability.md, "The synchronous cancel").
"""
from datetime import datetime, timedelta

from common.errors import NotAllowed
from common.lifecycle import (CANCELED, CONFIRMED, DELIVERED, REQUESTED, RESERVATION_PROGRESS, RETURNED, SHIPPED,
                              WAITLISTED)

PROGRESS = RESERVATION_PROGRESS
HOLDS_A_COPY = {CONFIRMED, SHIPPED, DELIVERED}
LIVE = {REQUESTED, WAITLISTED, CONFIRMED, SHIPPED, DELIVERED}  # what the lending limits count
CANCELABLE = {REQUESTED, WAITLISTED, CONFIRMED, SHIPPED}
FINISHED = {RETURNED, CANCELED}
# The events that say where the book goes (delivery reads it from the confirmation).
ADDRESSED = {"reservation_requested", "reservation_confirmed"}
# Who canceled (reservation_canceled.canceled_by): the customer asked for it,
# or the library could not serve it (notices tell only about the latter).
BY_CUSTOMER = "customer"
BY_LIBRARY = "library"


class LendingRules:
    """The lending rules of SPEC §8, as settings (``config.yml``, each
    overridable by the environment variable of the same name)."""

    # The defaults of SPEC §8 (config.yml says the same).
    LOAN_PERIOD_SECONDS = 1209600  # 14 days
    MAX_RENEWALS = 2
    MAX_ACTIVE_RESERVATIONS = 5
    ALLOW_SAME_TITLE_TWICE = False

    def __init__(self, loan_period=LOAN_PERIOD_SECONDS, max_renewals=MAX_RENEWALS,
                 max_active=MAX_ACTIVE_RESERVATIONS, allow_same_title_twice=ALLOW_SAME_TITLE_TWICE):
        self.loan_period = float(loan_period)  # seconds from delivery to due
        self.max_renewals = int(max_renewals)
        self.max_active = int(max_active)  # live reservations per customer; 0: no limit
        self.allow_same_title_twice = bool(allow_same_title_twice)

    @property
    def counts_live(self):
        return self.max_active > 0

    @property
    def checks_title(self):
        return not self.allow_same_title_twice

    @classmethod
    def from_config(cls, config):
        def setting(name):
            value = config.get(name)
            return getattr(cls, name) if value is None or value == "" else value
        return cls(
            loan_period=setting("LOAN_PERIOD_SECONDS"),
            max_renewals=setting("MAX_RENEWALS"),
            max_active=setting("MAX_ACTIVE_RESERVATIONS"),
            allow_same_title_twice=_true(setting("ALLOW_SAME_TITLE_TWICE")))

    def check_reserve(self, holdings):
        """Raise ``NotAllowed`` (409) if a customer with these ``Holdings``
        may not reserve one more title; the message says which rule refuses."""
        if holdings.overdue_loan is not None:
            raise NotAllowed("you have an overdue loan: return it before reserving again",
                             rule="overdue", reservation_id=holdings.overdue_loan)
        if self.max_active and holdings.live >= self.max_active:
            raise NotAllowed(f"you already hold {holdings.live} live reservations, the most allowed is "
                             f"{self.max_active}", rule="MAX_ACTIVE_RESERVATIONS", limit=self.max_active)
        if not self.allow_same_title_twice and holdings.holds_title:
            raise NotAllowed("you already hold a live reservation of this title", rule="ALLOW_SAME_TITLE_TWICE")


class Holdings:
    """What the lending limits need to know of a customer about to reserve a
    title: one of their overdue loans (its id, or None), how many live
    reservations they hold, and whether one of them is of that title. The
    store finds out only what the rules in force ask (``rules.counts_live``,
    ``rules.checks_title``), so a customer with thousands of reservations
    under a benchmark's open limits costs no more than one with none."""

    def __init__(self, overdue_loan=None, live=0, holds_title=False):
        self.overdue_loan = overdue_loan
        self.live = live
        self.holds_title = holds_title

    @classmethod
    def of(cls, reservations, book_id, now):
        """The holdings among ``reservations`` (a customer's, any status): the
        definition that ``reservation.models.holdings`` answers in SQL."""
        live = [r for r in reservations if r.status in LIVE]
        overdue = next((r.id for r in live if r.is_overdue(now)), None)
        return cls(overdue, len(live), any(r.book_id == book_id for r in live))


def _true(value):
    return value is True or str(value).strip().lower() in ("true", "1", "yes", "on")


def later(moment, seconds):
    """The ISO 8601 UTC moment ``seconds`` after ``moment`` (an ISO 8601 string)."""
    at = datetime.fromisoformat(moment.replace("Z", "+00:00")) + timedelta(seconds=seconds)
    return at.isoformat(timespec="microseconds")


class Reservation:
    def __init__(self, id, book_id, customer, now, idempotency_key=None, address=None):
        self.id = id
        self.book_id = book_id
        self.customer = customer
        self.status = REQUESTED
        self.created_at = now
        self.updated_at = now
        self.idempotency_key = idempotency_key
        # Where the book goes, fixed when reserved: a later change of the
        # customer's account address is for later reservations.
        self.address = address
        # The loan (SPEC §8): set once delivered.
        self.due_at = None  # ISO 8601 UTC, the format of now_iso (so strings compare as times)
        self.renewals = 0
        self.overdue = False
        self.canceled_by = None  # BY_CUSTOMER or BY_LIBRARY, once canceled

    @classmethod
    def request(cls, id, book_id, customer, now, idempotency_key=None, address=None):
        reservation = cls(id, book_id, customer, now, idempotency_key, address)
        return reservation, [reservation._caused("reservation_requested")]

    # -- what other services tell us ------------------------------------

    def copy_allocated(self, now):
        return self._advance(CONFIRMED, now)

    def waitlisted(self, now):
        return self._advance(WAITLISTED, now)

    def shipped(self, now):
        return self._advance(SHIPPED, now)

    def delivered(self, now, loan_period=LendingRules.LOAN_PERIOD_SECONDS, delivered_at=None):
        """The customer has the book: the loan runs ``loan_period`` seconds
        from the moment of delivery (``delivered_at``, by default ``now``)."""
        if not self._may_advance(DELIVERED):
            return []
        self.due_at = later(delivered_at or now, loan_period)
        return self._become(DELIVERED, now)

    def delivery_canceled(self, now):
        """delivery has canceled this reservation's delivery. That only
        happens because a cancel was asked for, and it cannot be undone:
        the reservation is canceled too, however far the request that asked
        got (it may have died, or been told 503)."""
        if self.status in CANCELABLE:
            return self._canceled(BY_CUSTOMER, now)
        return []

    def allocation_refused(self, now):
        """The title does not exist: the reservation can never be served."""
        if self.status in FINISHED or self.status in HOLDS_A_COPY:
            return []
        return self._canceled(BY_LIBRARY, now)

    # -- what the customer asks -----------------------------------------

    @property
    def may_have_delivery(self):
        """A delivery exists, or is on its way to existing, once confirmed."""
        return self.status in (CONFIRMED, SHIPPED)

    def check_cancel(self):
        if self.status != CANCELED and self.status not in CANCELABLE:
            raise NotAllowed(f"a {self.status} reservation cannot be canceled", status=self.status)

    def cancel(self, now):
        """Cancel; canceling twice is not an error, and changes nothing."""
        self.check_cancel()
        if self.status == CANCELED:
            return []
        return self._canceled(BY_CUSTOMER, now)

    def intend_cancel(self, correlation_id, expires_at):
        """The first step of a cancel that needs delivery's: check that it
        is allowed and say so, before delivery is asked (``CancelIntent``)."""
        self.check_cancel()
        return CancelIntent(self.id, correlation_id, expires_at)

    def return_book(self, now):
        if self.status != DELIVERED:
            raise NotAllowed(f"only a delivered reservation can be returned, this one is {self.status}",
                             status=self.status)
        self.overdue = False  # a return ends it
        return self._become(RETURNED, now)

    # -- the loan -------------------------------------------------------

    def is_overdue(self, now):
        """Overdue: delivered, and due before ``now`` (whether or not the
        timer has marked it yet)."""
        return self.status == DELIVERED and (self.overdue or (self.due_at is not None and self.due_at <= now))

    def renew(self, now, rules, someone_waits):
        """Move ``due_at`` one loan period later, from the current ``due_at``;
        ``someone_waits``: another customer waits for this title."""
        if self.status != DELIVERED:
            raise NotAllowed(f"only a delivered loan can be renewed, this reservation is {self.status}",
                             status=self.status)
        if self.is_overdue(now):
            raise NotAllowed(f"this loan is overdue (it was due {self.due_at}): return it", due_at=self.due_at)
        if self.renewals >= rules.max_renewals:
            raise NotAllowed(f"this loan has been renewed {self.renewals} times, the most allowed is "
                             f"{rules.max_renewals}", renewals=self.renewals, limit=rules.max_renewals)
        if someone_waits:
            raise NotAllowed("another customer is waiting for this title: please return it by its due date",
                             due_at=self.due_at)
        self.due_at = later(self.due_at, rules.loan_period)
        self.renewals += 1
        self.updated_at = now
        return [self._caused("loan_renewed")]

    # -- mechanics ------------------------------------------------------

    def _may_advance(self, status):
        return self.status not in FINISHED and PROGRESS.index(status) > PROGRESS.index(self.status)

    def _advance(self, status, now):
        if not self._may_advance(status):
            return []
        return self._become(status, now)

    def _canceled(self, by, now):
        self.canceled_by = by
        return self._become(CANCELED, now)

    def _become(self, status, now):
        self.status = status
        self.updated_at = now
        return [self._caused(f"reservation_{status}")]

    def _caused(self, event_type):
        return event_type, self.event_fields(event_type)

    def event_fields(self, event_type=None):
        fields = {"reservation_id": self.id, "book_id": self.book_id, "customer": self.customer}
        if event_type in ADDRESSED:
            fields["address"] = self.address
        if event_type in ("reservation_delivered", "loan_renewed", "loan_overdue"):
            fields["due_at"] = self.due_at
        if event_type == "loan_renewed":
            fields["renewals"] = self.renewals
        if event_type == "reservation_canceled":
            fields["canceled_by"] = self.canceled_by or BY_CUSTOMER
        return fields

    def to_dict(self):
        return {
            "id": self.id,
            "book_id": self.book_id,
            "customer": self.customer,
            "status": self.status,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "address": self.address,
            "due_at": self.due_at,
            "renewals": self.renewals or 0,
            "overdue": bool(self.overdue),
        }


# -- the synchronous cancel, whole or absent ---------------------------------

COMPLETE = "complete"  # delivery canceled: cancel the reservation
DROP = "drop"  # delivery did not cancel and no longer can for this request: nothing changed
WAIT = "wait"  # a request of this cancel may still be acting: ask again later

# How long after a request's deadline a delivery commit that began before it
# may still land. Past that, delivery refuses to act for the request
# (common.rpc: the deadline travels with it and is checked before commit).
COMMIT_GRACE = 2.0


class CancelIntent:
    """A cancel in flight: delivery has been (or is about to be) asked to
    cancel the reservation's delivery, and its answer is not known here yet.

    Written in its own transaction before delivery is asked, deleted in the
    transaction that cancels the reservation. So if the process dies in
    between, or delivery's answer is lost, the intent is still there and the
    recovery settles it from the delivery's status: canceled means the
    reservation is canceled too; anything else, once no request of this
    cancel can act any more (``expires_at``, its deadline, plus
    ``COMMIT_GRACE``), means nothing changed, and the intent is dropped.
    ``expires_at`` and ``now`` are Unix times (seconds)."""

    def __init__(self, reservation_id, correlation_id, expires_at):
        self.reservation_id = reservation_id
        self.correlation_id = correlation_id  # the request's: the event that completes it carries it
        self.expires_at = expires_at

    def renew(self, other):
        """Another request cancels the same reservation: it is in flight until the later deadline."""
        self.correlation_id = other.correlation_id
        self.expires_at = max(self.expires_at, other.expires_at)

    def expired(self, now):
        """No request of this cancel is waiting for delivery's answer any more."""
        return now > self.expires_at

    def outcome(self, delivery_status, now):
        """What the recovery does, given the delivery's status (None: there
        is no delivery): ``COMPLETE``, ``DROP`` or ``WAIT``."""
        if delivery_status == CANCELED:
            return COMPLETE
        if now > self.expires_at + COMMIT_GRACE:
            return DROP
        return WAIT
