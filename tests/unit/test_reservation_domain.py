"""The reservation lifecycle (SPEC §3), without Nameko, broker or database.

Steps learned from other services' events only ever move a reservation
forward; the customer's own actions (cancel, return) are refused with
NotAllowed when the state does not allow them.
"""
import pytest

from common import events

from common.errors import NotAllowed
from common.events import TYPES
from common.lifecycle import RESERVATION_STATUSES
from reservation.domain import (
    CANCELED, CONFIRMED, DELIVERED, PROGRESS, REQUESTED, RETURNED, SHIPPED, WAITLISTED, Reservation,
)
from helpers import event_types

ALL_STATUSES = RESERVATION_STATUSES

# The event-driven steps, by the status each one aims at.
STEP_TO = {
    WAITLISTED: Reservation.waitlisted,
    CONFIRMED: Reservation.copy_allocated,
    SHIPPED: Reservation.shipped,
    DELIVERED: Reservation.delivered,
}


def at(minute):
    return f"2024-05-01T10:{minute:02d}:00.000000+00:00"


def reservation_in(status):
    """A reservation brought to ``status`` along the legal path, at minute 0..5."""
    reservation, _ = Reservation.request("r-1", 7, "alice", at(0))
    path = {
        REQUESTED: [],
        WAITLISTED: [Reservation.waitlisted],
        CONFIRMED: [Reservation.copy_allocated],
        SHIPPED: [Reservation.copy_allocated, Reservation.shipped],
        DELIVERED: [Reservation.copy_allocated, Reservation.shipped, Reservation.delivered],
        RETURNED: [Reservation.copy_allocated, Reservation.shipped, Reservation.delivered,
                   Reservation.return_book],
        CANCELED: [Reservation.cancel],
    }[status]
    for minute, step in enumerate(path, start=1):
        step(reservation, at(minute))
    assert reservation.status == status
    return reservation


# -- a new reservation --------------------------------------------------------

def test_a_new_reservation_is_requested_and_announces_it():
    reservation, caused = Reservation.request("r-1", 7, "alice", at(0), idempotency_key="k-1")

    assert reservation.status == REQUESTED
    assert event_types(caused) == ["reservation_requested"]
    assert reservation.created_at == reservation.updated_at == at(0)
    assert reservation.idempotency_key == "k-1"
    assert reservation.to_dict() == {
        "id": "r-1", "book_id": 7, "customer": "alice", "status": "requested",
        "created_at": at(0), "updated_at": at(0), "address": None,
        "due_at": None, "renewals": 0, "overdue": False,
    }
    assert reservation.event_fields() == {"reservation_id": "r-1", "book_id": 7, "customer": "alice"}


def test_a_reservation_keeps_where_its_book_goes_and_says_it_when_requested_and_confirmed():
    reservation, _ = Reservation.request("r-1", 7, "alice", at(0), address="12 Reading Lane")

    assert reservation.to_dict()["address"] == "12 Reading Lane"
    for event_type in ("reservation_requested", "reservation_confirmed"):
        assert reservation.event_fields(event_type)["address"] == "12 Reading Lane"
    for event_type in ("reservation_waitlisted", "reservation_shipped", "reservation_canceled"):
        assert "address" not in reservation.event_fields(event_type)
    for event_type in ("reservation_requested", "reservation_confirmed"):  # and the schemas take it
        events.make(event_type, "corr", **reservation.event_fields(event_type))


# -- forward moves ----------------------------------------------------------

@pytest.mark.parametrize("start, step, expected", [
    (REQUESTED, Reservation.waitlisted, WAITLISTED),
    (REQUESTED, Reservation.copy_allocated, CONFIRMED),
    (WAITLISTED, Reservation.copy_allocated, CONFIRMED),
    (CONFIRMED, Reservation.shipped, SHIPPED),
    (SHIPPED, Reservation.delivered, DELIVERED),
])
def test_each_lifecycle_step_moves_the_reservation_forward(start, step, expected):
    reservation = reservation_in(start)

    caused = step(reservation, at(30))

    assert reservation.status == expected
    assert event_types(caused) == [f"reservation_{expected}"]
    assert reservation.updated_at == at(30)


@pytest.mark.parametrize("start, step, expected", [
    (REQUESTED, Reservation.shipped, SHIPPED),        # copy_allocated still queued
    (CONFIRMED, Reservation.delivered, DELIVERED),    # delivery_shipped still queued
    (WAITLISTED, Reservation.delivered, DELIVERED),
])
def test_an_event_that_overtakes_its_predecessors_still_moves_forward(start, step, expected):
    reservation = reservation_in(start)

    assert event_types(step(reservation, at(30))) == [f"reservation_{expected}"]
    assert reservation.status == expected


# -- late, duplicate and out-of-order events never move back -----------------

BACKWARD_OR_SAME = [
    (current, target)
    for current in PROGRESS[:-1]  # requested .. delivered; finished ones are tested below
    for target in STEP_TO
    if PROGRESS.index(target) <= PROGRESS.index(current)
]


@pytest.mark.parametrize("current, target", BACKWARD_OR_SAME)
def test_a_late_or_duplicate_event_never_moves_a_reservation_back(current, target):
    reservation = reservation_in(current)
    updated_at = reservation.updated_at

    caused = STEP_TO[target](reservation, at(30))

    assert caused == []
    assert reservation.status == current
    assert reservation.updated_at == updated_at


def test_waitlist_joined_arriving_after_the_copy_was_allocated_changes_nothing():
    reservation = reservation_in(CONFIRMED)

    assert reservation.waitlisted(at(30)) == []
    assert reservation.status == CONFIRMED


@pytest.mark.parametrize("final", [CANCELED, RETURNED])
@pytest.mark.parametrize("step", [Reservation.waitlisted, Reservation.copy_allocated, Reservation.shipped,
                                  Reservation.delivered, Reservation.allocation_refused])
def test_canceled_and_returned_are_final_for_every_event(final, step):
    reservation = reservation_in(final)
    updated_at = reservation.updated_at

    assert step(reservation, at(30)) == []
    assert reservation.status == final
    assert reservation.updated_at == updated_at


# -- a title we do not have ---------------------------------------------------

@pytest.mark.parametrize("start", [REQUESTED, WAITLISTED])
def test_allocation_refused_cancels_a_reservation_that_has_no_copy(start):
    reservation = reservation_in(start)

    assert event_types(reservation.allocation_refused(at(30))) == ["reservation_canceled"]
    assert reservation.status == CANCELED
    assert reservation.updated_at == at(30)


@pytest.mark.parametrize("start", [CONFIRMED, SHIPPED, DELIVERED])
def test_allocation_refused_never_cancels_a_reservation_holding_a_copy(start):
    reservation = reservation_in(start)

    assert reservation.allocation_refused(at(30)) == []
    assert reservation.status == start


# -- cancel ---------------------------------------------------------------------

@pytest.mark.parametrize("start", [REQUESTED, WAITLISTED, CONFIRMED, SHIPPED])
def test_the_customer_may_cancel_until_the_book_is_delivered(start):
    reservation = reservation_in(start)
    reservation.check_cancel()  # does not raise

    caused = reservation.cancel(at(30))

    assert event_types(caused) == ["reservation_canceled"]
    assert reservation.status == CANCELED
    assert reservation.updated_at == at(30)


def test_canceling_twice_is_not_an_error_and_changes_nothing():
    reservation = reservation_in(CONFIRMED)
    reservation.cancel(at(30))

    reservation.check_cancel()  # does not raise
    assert reservation.cancel(at(40)) == []
    assert reservation.status == CANCELED
    assert reservation.updated_at == at(30)


@pytest.mark.parametrize("start", [DELIVERED, RETURNED])
def test_cancel_is_refused_once_the_book_is_delivered(start):
    reservation = reservation_in(start)
    updated_at = reservation.updated_at

    with pytest.raises(NotAllowed) as refused:
        reservation.check_cancel()
    assert refused.value.details == {"status": start}
    with pytest.raises(NotAllowed):
        reservation.cancel(at(30))
    assert reservation.status == start
    assert reservation.updated_at == updated_at


@pytest.mark.parametrize("status, expected", [
    (REQUESTED, False), (WAITLISTED, False), (CONFIRMED, True), (SHIPPED, True),
    (DELIVERED, False), (RETURNED, False), (CANCELED, False),
])
def test_a_delivery_may_exist_only_for_a_confirmed_or_shipped_reservation(status, expected):
    # the synchronous cancel calls delivery exactly when this is true
    assert reservation_in(status).may_have_delivery is expected


# -- return -------------------------------------------------------------------

def test_a_delivered_book_can_be_returned():
    reservation = reservation_in(DELIVERED)

    assert event_types(reservation.return_book(at(30))) == ["reservation_returned"]
    assert reservation.status == RETURNED
    assert reservation.updated_at == at(30)


@pytest.mark.parametrize("start", [REQUESTED, WAITLISTED, CONFIRMED, SHIPPED, RETURNED, CANCELED])
def test_return_is_refused_unless_the_book_was_delivered(start):
    reservation = reservation_in(start)
    updated_at = reservation.updated_at

    with pytest.raises(NotAllowed) as refused:
        reservation.return_book(at(30))

    assert refused.value.details == {"status": start}
    assert reservation.status == start
    assert reservation.updated_at == updated_at


# -- what the reservation announces ---------------------------------------------

def test_every_event_a_reservation_causes_is_a_declared_event_type():
    caused = Reservation.request("r-1", 7, "alice", at(0))[1]
    for status in ALL_STATUSES:
        for step in [*STEP_TO.values(), Reservation.allocation_refused]:
            caused += step(reservation_in(status), at(30))
        reservation = reservation_in(status)
        for action in (Reservation.cancel, Reservation.return_book):
            try:
                caused += action(reservation, at(30))
            except NotAllowed:
                pass

    assert set(event_types(caused)) <= set(TYPES)
    assert set(event_types(caused)) == {f"reservation_{s}" for s in ALL_STATUSES}
