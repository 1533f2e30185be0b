"""Loans and the lending limits (SPEC §8) in the reservation service, on the
real broker and a real SQLite file: ``due_at`` from the delivery, renew and
its refusals, the overdue check on its timer (one ``loan_overdue`` per loan,
with two replicas checking), and the limits on ``create`` under twenty
concurrent requests of one customer."""
import time
from datetime import datetime

import eventlet
import pytest
from nameko.exceptions import RemoteError

from reservation.service import ReservationService
from support import assert_envelope
from test_reservation_service import confirm, create, step

SERVICE = "reservation"  # the service under test: what ``emitted`` (conftest) watches
LOAN = 2.0  # seconds: a short loan period


@pytest.fixture
def db(db):
    return db("reservation")


def deliver(container, publish, created):
    confirm(container, publish, created)
    step(container, publish, "delivery_shipped", created)
    return step(container, publish, "delivery_delivered", created, "corr-deliver")


def seconds_between(earlier, later):
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


def refused(call):
    with pytest.raises(RemoteError) as error:
        call()
    assert error.value.exc_type == "NotAllowed"
    return error.value.value


def test_a_delivered_loan_is_due_one_period_after_delivery_and_renews(start, rpc, publish, emitted, db):
    container = start(ReservationService, LOAN_PERIOD_SECONDS=3600, OVERDUE_CHECK_SECONDS=60)
    created = create(rpc)
    assert (created["due_at"], created["renewals"], created["overdue"]) == (None, 0, False)
    handed_over = deliver(container, publish, created)

    loan = rpc().reservation.get(created["id"], "alice")
    assert seconds_between(handed_over["occurred_at"], loan["due_at"]) == 3600
    assert emitted.wait_for("reservation_delivered")["due_at"] == loan["due_at"]

    renewed = rpc(correlation_id="corr-renew").reservation.renew(created["id"], "alice")
    assert seconds_between(loan["due_at"], renewed["due_at"]) == 3600 and renewed["renewals"] == 1
    event = emitted.wait_for("loan_renewed")
    assert_envelope(event, "loan_renewed", "corr-renew")
    assert (event["due_at"], event["renewals"]) == (renewed["due_at"], 1)
    assert db.one("SELECT due_at, renewals FROM reservations WHERE id = :id", id=created["id"]) == {
        "due_at": renewed["due_at"], "renewals": 1}

    rpc().reservation.renew(created["id"], "alice")
    assert "the most allowed is 2" in refused(lambda: rpc().reservation.renew(created["id"], "alice"))
    with pytest.raises(RemoteError) as error:  # someone else's: not found
        rpc().reservation.renew(created["id"], "bob")
    assert error.value.exc_type == "NotFound"


def test_no_renewal_before_delivery_nor_while_another_customer_waits(start, rpc, publish):
    container = start(ReservationService)
    mine = create(rpc)
    assert "this reservation is requested" in refused(lambda: rpc().reservation.renew(mine["id"], "alice"))
    deliver(container, publish, mine)
    waiting = create(rpc, customer="bob")
    step(container, publish, "waitlist_joined", waiting)
    assert "another customer is waiting" in refused(lambda: rpc().reservation.renew(mine["id"], "alice"))
    confirm(container, publish, waiting)  # bob got a copy: nobody waits any more
    assert rpc().reservation.renew(mine["id"], "alice")["renewals"] == 1


def test_an_overdue_loan_is_marked_once_by_two_replicas_blocks_reserving_until_returned(
        start, rpc, publish, emitted, db):
    settings = {"LOAN_PERIOD_SECONDS": LOAN, "OVERDUE_CHECK_SECONDS": 0.2}
    first = start(ReservationService, **settings)
    start(ReservationService, **settings)  # a second replica, with its own timer
    created = create(rpc)
    deliver(first, publish, created)

    overdue = emitted.wait_for("loan_overdue", timeout=LOAN + 5)
    assert (overdue["reservation_id"], overdue["customer"]) == (created["id"], "alice")
    loan = rpc().reservation.get(created["id"], "alice")
    assert loan["overdue"] is True and overdue["due_at"] == loan["due_at"]
    eventlet.sleep(1.0)  # many rounds of both timers
    emitted.settle()
    assert len(emitted.of_type("loan_overdue")) == 1

    assert "overdue" in refused(lambda: create(rpc, book_id=8))
    assert "overdue" in refused(lambda: rpc().reservation.renew(created["id"], "alice"))
    returned = rpc().reservation.return_book(created["id"], "alice")
    assert returned["status"] == "returned" and returned["overdue"] is False
    assert create(rpc, book_id=8)["status"] == "requested"
    assert db.count("reservations", "overdue") == 0


@pytest.mark.parametrize("same_title", [False, True], ids=["different-titles", "same-title"])
def test_twenty_concurrent_requests_of_one_customer_keep_the_limits(start, rpc, same_title):
    start(ReservationService, MAX_ACTIVE_RESERVATIONS=5, ALLOW_SAME_TITLE_TWICE=False)
    proxies = [rpc(timeout=30) for _ in range(20)]  # one connection each: all twenty in flight at once

    def attempt(n):
        try:
            return proxies[n].reservation.create(7 if same_title else 100 + n, "carol")
        except RemoteError as error:
            assert error.exc_type == "NotAllowed", error
            return error.value

    answers = list(eventlet.GreenPool(20).imap(attempt, range(20)))
    made = [a for a in answers if isinstance(a, dict)]
    assert len(made) == (1 if same_title else 5), answers
    reason = "of this title" if same_title else "the most allowed is 5"
    assert all(reason in a for a in answers if not isinstance(a, dict))
    assert create(rpc, customer="dave")["status"] == "requested"  # others unaffected


def test_the_limits_count_live_reservations_only(start, rpc):
    start(ReservationService, MAX_ACTIVE_RESERVATIONS=2)
    first = create(rpc, book_id=1)
    create(rpc, book_id=2)
    assert "the most allowed is 2" in refused(lambda: create(rpc, book_id=3))
    rpc().reservation.cancel(first["id"], "alice")
    assert create(rpc, book_id=3)["status"] == "requested"


def test_the_limits_can_be_switched_off(start, rpc):
    start(ReservationService, MAX_ACTIVE_RESERVATIONS=0, ALLOW_SAME_TITLE_TWICE=True)
    assert len({create(rpc, book_id=1)["id"] for _ in range(7)}) == 7


def test_a_replayed_request_answers_what_it_answered_first_even_at_the_limit(start, rpc):
    start(ReservationService, MAX_ACTIVE_RESERVATIONS=1)
    first = create(rpc, book_id=1, idempotency_key="k-1")
    assert create(rpc, book_id=1, idempotency_key="k-1")["id"] == first["id"]
    assert "the most allowed is 1" in refused(lambda: create(rpc, book_id=2, idempotency_key="k-2"))
