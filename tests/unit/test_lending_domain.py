"""Loans and the lending limits (SPEC §8), in the plain-Python domain:
``due_at`` from the moment of delivery, renewals and each refusal's reason,
overdue, and the checks a new reservation must pass."""
import pytest

from common import events
from common.errors import NotAllowed
from reservation.domain import (
    BY_CUSTOMER, BY_LIBRARY, CANCELED, DELIVERED, Holdings, LendingRules, Reservation, later,
)
from helpers import event_types

DAY = 24 * 3600
RULES = LendingRules(loan_period=14 * DAY, max_renewals=2, max_active=5, allow_same_title_twice=False)


def at(day, hour=10):
    return f"2024-05-{day:02d}T{hour:02d}:00:00.000000+00:00"


def delivered(book_id=7, customer="alice", on=1, rid="r-1"):
    reservation, _ = Reservation.request(rid, book_id, customer, at(on))
    reservation.copy_allocated(at(on))
    reservation.shipped(at(on))
    assert event_types(reservation.delivered(at(on, 12), RULES.loan_period)) == ["reservation_delivered"]
    return reservation


def held(*pairs):
    """Live reservations of one customer: (book_id, status) pairs."""
    out = []
    for n, (book_id, status) in enumerate(pairs):
        reservation = delivered(book_id, rid=f"r-{n}") if status == DELIVERED else \
            Reservation.request(f"r-{n}", book_id, "alice", at(1))[0]
        out.append(reservation)
    return out


# -- due_at ------------------------------------------------------------------------------------

def test_due_at_is_null_until_delivered_then_one_loan_period_after_delivery():
    reservation, _ = Reservation.request("r-1", 7, "alice", at(1))
    assert reservation.to_dict()["due_at"] is None
    reservation = delivered()
    assert reservation.due_at == "2024-05-15T12:00:00.000000+00:00"
    assert reservation.to_dict()["renewals"] == 0 and reservation.to_dict()["overdue"] is False


def test_the_loan_runs_from_the_moment_of_delivery_not_the_moment_it_is_heard():
    reservation, _ = Reservation.request("r-1", 7, "alice", at(1))
    reservation.copy_allocated(at(1))
    reservation.delivered(at(3), RULES.loan_period, delivered_at=at(2))
    assert reservation.due_at == later(at(2), 14 * DAY)


def test_a_second_delivered_event_does_not_move_due_at():
    reservation = delivered()
    due = reservation.due_at
    assert reservation.delivered(at(5), RULES.loan_period) == []
    assert reservation.due_at == due


def test_the_delivered_event_carries_due_at_and_is_valid():
    reservation = delivered()
    event = events.make("reservation_delivered", "c", **reservation.event_fields("reservation_delivered"))
    assert event["due_at"] == reservation.due_at


# -- renew -------------------------------------------------------------------------------------

def test_renew_moves_due_at_one_period_later_from_the_current_due_at():
    reservation = delivered()
    assert event_types(reservation.renew(at(3), RULES, someone_waits=False)) == ["loan_renewed"]
    assert reservation.due_at == later(at(1, 12), 28 * DAY) and reservation.renewals == 1
    fields = reservation.event_fields("loan_renewed")
    assert fields["due_at"] == reservation.due_at and fields["renewals"] == 1
    events.make("loan_renewed", "c", **fields)  # valid


@pytest.mark.parametrize("status", ["requested", "waitlisted", "confirmed", "shipped", "returned", "canceled"])
def test_only_a_delivered_loan_can_be_renewed(status):
    reservation, _ = Reservation.request("r-1", 7, "alice", at(1))
    reservation.status = status
    with pytest.raises(NotAllowed, match=f"only a delivered loan can be renewed, this reservation is {status}"):
        reservation.renew(at(2), RULES, someone_waits=False)


def test_an_overdue_loan_cannot_be_renewed_even_before_the_check_marks_it():
    reservation = delivered()
    with pytest.raises(NotAllowed, match="overdue"):
        reservation.renew(at(20), RULES, someone_waits=False)
    assert reservation.renewals == 0


def test_renewals_stop_at_max_renewals():
    reservation = delivered()
    reservation.renew(at(2), RULES, False)
    reservation.renew(at(3), RULES, False)
    with pytest.raises(NotAllowed, match="renewed 2 times, the most allowed is 2"):
        reservation.renew(at(4), RULES, False)
    assert reservation.renewals == 2


def test_no_renewal_when_another_customer_waits_for_the_title():
    reservation = delivered()
    due = reservation.due_at
    with pytest.raises(NotAllowed, match="another customer is waiting"):
        reservation.renew(at(2), RULES, someone_waits=True)
    assert reservation.due_at == due


# -- overdue -----------------------------------------------------------------------------------

def test_a_loan_is_overdue_from_its_due_moment_until_returned():
    reservation = delivered()
    assert not reservation.is_overdue(at(15, 11))
    assert reservation.is_overdue(at(15, 12))
    reservation.overdue = True  # as the overdue check marks it
    reservation.return_book(at(16))
    assert reservation.overdue is False and not reservation.is_overdue(at(20))


def test_the_overdue_event_is_valid():
    reservation = delivered()
    events.make("loan_overdue", "c", **reservation.event_fields("loan_overdue"))


# -- who canceled ------------------------------------------------------------------------------

def test_canceled_by_says_whether_the_customer_or_the_library_canceled():
    mine, _ = Reservation.request("r-1", 7, "alice", at(1))
    mine.cancel(at(2))
    assert mine.event_fields("reservation_canceled")["canceled_by"] == BY_CUSTOMER
    refused, _ = Reservation.request("r-2", 7, "alice", at(1))
    assert event_types(refused.allocation_refused(at(2))) == ["reservation_canceled"]
    assert refused.status == CANCELED
    assert refused.event_fields("reservation_canceled")["canceled_by"] == BY_LIBRARY
    confirmed, _ = Reservation.request("r-3", 7, "alice", at(1))
    confirmed.copy_allocated(at(1))
    confirmed.delivery_canceled(at(2))  # the customer's cancel, finished by delivery's event
    assert confirmed.event_fields("reservation_canceled")["canceled_by"] == BY_CUSTOMER


# -- the limits on a new reservation -----------------------------------------------------------

def test_a_customer_within_the_limits_may_reserve():
    RULES.check_reserve(Holdings.of(held((1, "requested"), (2, DELIVERED), (3, "waitlisted")), 9, at(2)))


def test_an_overdue_loan_blocks_reserving():
    with pytest.raises(NotAllowed, match="overdue loan") as refused:
        RULES.check_reserve(Holdings.of(held((1, DELIVERED)), 9, at(20)))
    assert refused.value.details["rule"] == "overdue"


def test_max_active_reservations_counts_live_reservations():
    five = held(*[(n, "requested") for n in range(1, 6)])
    with pytest.raises(NotAllowed, match="already hold 5 live reservations, the most allowed is 5"):
        RULES.check_reserve(Holdings.of(five, 9, at(2)))
    RULES.check_reserve(Holdings.of(five[:4], 9, at(2)))
    five[0].cancel(at(2))
    RULES.check_reserve(Holdings.of(five, 9, at(2)))  # a canceled one is not live
    unlimited = LendingRules(max_active=0)
    assert not unlimited.counts_live
    unlimited.check_reserve(Holdings(live=1000))  # 0: no limit


def test_one_live_reservation_per_title_unless_allowed():
    with pytest.raises(NotAllowed, match="already hold a live reservation of this title"):
        RULES.check_reserve(Holdings.of(held((1, "waitlisted")), 1, at(2)))
    twice = LendingRules(allow_same_title_twice=True)
    assert not twice.checks_title
    twice.check_reserve(Holdings.of(held((1, "waitlisted")), 1, at(2)))


@pytest.mark.parametrize("config, expected", [
    ({}, (1209600.0, 2, 5, False)),
    ({"LOAN_PERIOD_SECONDS": 3, "MAX_RENEWALS": "1", "MAX_ACTIVE_RESERVATIONS": 0,
      "ALLOW_SAME_TITLE_TWICE": True}, (3.0, 1, 0, True)),
    ({"ALLOW_SAME_TITLE_TWICE": "false"}, (1209600.0, 2, 5, False)),
    ({"ALLOW_SAME_TITLE_TWICE": "true", "LOAN_PERIOD_SECONDS": ""}, (1209600.0, 2, 5, True)),
])
def test_the_rules_come_from_the_settings(config, expected):
    rules = LendingRules.from_config(config)
    assert (rules.loan_period, rules.max_renewals, rules.max_active, rules.allow_same_title_twice) == expected
