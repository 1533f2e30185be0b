"""MyPage: what a customer sees of each of their reservations.

A read model (the Q of CQRS), built only from events. Events arrive late,
twice or out of order (one queue per event type, replicas in parallel), so a
view only ever moves forward: a status is taken only if it comes after the
current one, a canceled or returned reservation stays so, and a late event
still finds its place in the history, in time order.

Where a waitlisted reservation stands in its title's line
(``queue_position``) is worked out here too, from these views alone: the
line of a title is its views that are ``waitlisted``, in the order product
serves them (first come, first served: by the moment the customer reserved,
the ``occurred_at`` of ``reservation_requested``, then by reservation id;
``product.models.Catalogue.waitlist``). A view's ``created_at`` is that moment once
``reservation_requested`` has arrived (it is the earliest of its events).
The position is counted when a page is read, never stored, so it is right
however the line moves (a copy comes back and the first is confirmed,
someone ahead cancels): each of those moves is an event that takes a view
out of ``waitlisted``. MyPage asks no one: the events are enough.

A delivered reservation is a loan (SPEC §8): its ``due_at`` comes with
``reservation_delivered`` and moves later with each ``loan_renewed`` (so the
latest is the one kept, whatever the order of arrival); ``overdue`` is set
by ``loan_overdue`` and ended by ``reservation_returned``.

A customer's page lists their views newest first, in that same order
reversed (``line_key``: the moment reserved, then the id), a page at a time.
The next page starts after the ``line_key`` of the last row shown (a keyset,
not an offset): a key never changes once ``reservation_requested`` is in,
so changes to the views between two pages neither repeat nor skip a row.
"""
from common.lifecycle import (CANCELED, DELIVERED, DELIVERY_PROGRESS, PREPARING, RESERVATION_PROGRESS,
                              RESERVATION_STATUSES, RETURNED, SHIPPED, WAITLISTED)
FINAL = CANCELED

RESERVATION_EVENTS = {f"reservation_{s}": s for s in RESERVATION_STATUSES}
DELIVERY_EVENTS = {"delivery_created": PREPARING, "delivery_shipped": SHIPPED,
                   "delivery_delivered": DELIVERED, "delivery_canceled": FINAL}
LOAN_EVENTS = ("loan_renewed", "loan_overdue")


class ReservationView:
    def __init__(self, reservation_id, customer, book_id):
        self.reservation_id = reservation_id
        self.customer = customer
        self.book_id = book_id
        self.status = None
        self.delivery_status = None
        self.created_at = None
        self.updated_at = None
        self.history = []
        self.due_at = None
        self.overdue = False

    def apply(self, event):
        """Apply one reservation or delivery event; True if the view changed."""
        event_type, at = event["event_type"], event["occurred_at"]
        if event_type in RESERVATION_EVENTS:
            status = RESERVATION_EVENTS[event_type]
            changed = self._record(status, at)
            if _moves_forward(self.status, status, RESERVATION_PROGRESS, final_states=(FINAL, RETURNED)):
                self.status = status
                changed = True
            changed = self._loan(event) or changed
        elif event_type in LOAN_EVENTS:
            changed = self._loan(event)
        elif event_type in DELIVERY_EVENTS:
            status = DELIVERY_EVENTS[event_type]
            changed = _moves_forward(self.delivery_status, status, DELIVERY_PROGRESS, final_states=(FINAL, DELIVERED))
            if changed:
                self.delivery_status = status
        else:
            return False
        if changed:
            self.created_at = min(filter(None, [self.created_at, at]))
            self.updated_at = max(filter(None, [self.updated_at, at]))
        return changed

    @property
    def waiting(self):
        """In its title's line now."""
        return self.status == WAITLISTED

    @property
    def line_key(self):
        """Its place in the line: earlier keys are served first."""
        return (self.created_at or "", self.reservation_id)

    def _loan(self, event):
        """The loan's part of an event; True if it changed the view."""
        changed = False
        due_at = event.get("due_at")
        if due_at and (self.due_at is None or due_at > self.due_at):  # a renewal only ever moves it later
            self.due_at, changed = due_at, True
        overdue = event["event_type"] == "loan_overdue" and self.status != RETURNED
        if event["event_type"] == "reservation_returned" and self.overdue:
            self.overdue, changed = False, True  # a return ends it
        elif overdue and not self.overdue:
            self.overdue, changed = True, True
        return changed

    def _record(self, status, at):
        if any(entry["status"] == status for entry in self.history):
            return False
        self.history = sorted(self.history + [{"status": status, "at": at}], key=lambda entry: entry["at"])
        return True

    def to_dict(self, title, waiting_ahead=None):
        """``waiting_ahead``: how many waitlisted views of the title are ahead
        of this one in line (``line_key``), when it is waitlisted."""
        return {
            "reservation_id": self.reservation_id,
            "book_id": self.book_id,
            "title": title,
            "status": self.status,
            "delivery_status": self.delivery_status,
            "updated_at": self.updated_at,
            "queue_position": queue_position(self, waiting_ahead),
            "due_at": self.due_at,
            "overdue": bool(self.overdue),
            "history": list(self.history),
        }


def queue_position(view, waiting_ahead):
    """1 for the next in line, while waitlisted; else None."""
    if not view.waiting or waiting_ahead is None:
        return None
    return waiting_ahead + 1


def page(rows, limit):
    """``rows``: up to ``limit + 1`` (view, ...) newest first -> (the first
    ``limit``, the ``line_key`` to read the next page before; None on the last)."""
    shown = rows[:limit]
    return shown, (shown[-1][0].line_key if len(rows) > limit and shown else None)


def line_moved(was_waiting, view):
    """True when the view joined or left its title's line: the positions of
    those behind it changed, and their pages must be told."""
    return was_waiting != view.waiting


def _moves_forward(current, new, progress, final_states):
    if current == new or current in final_states:
        return False
    if new == FINAL or current is None:
        return True
    return progress.index(new) > progress.index(current)
