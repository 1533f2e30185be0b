"""MyPage's read model (SPEC §1.7, §4): built only from events that may come
late, twice or out of order, so a view only ever moves forward and a late
event still finds its place in the history."""
import itertools
import random

import pytest

from common import events
from mypage.domain import ReservationView, line_moved


def at(minute):
    return f"2024-05-01T10:{minute:02d}:00.000000+00:00"


def event(event_type, minute):
    """A real, valid event as the producers make it, stamped at ``minute``."""
    fields = {"reservation_id": "r-1", "book_id": 7, "customer": "alice", "occurred_at": at(minute)}
    if event_type.startswith("delivery_"):
        fields.update(delivery_id="d-1", status=event_type.split("_")[1])
    return events.make(event_type, "corr-1", **fields)


def view_after(*steps):
    view = ReservationView("r-1", "alice", 7)
    for event_type, minute in steps:
        view.apply(event(event_type, minute))
    return view


def statuses(view):
    return [(entry["status"], entry["at"]) for entry in view.history]


# -- reservation status ---------------------------------------------------------------

def test_a_requested_reservation_shows_up_with_its_first_history_entry():
    view = ReservationView("r-1", "alice", 7)

    assert view.apply(event("reservation_requested", 0)) is True

    assert view.to_dict("Dune") == {
        "reservation_id": "r-1", "book_id": 7, "title": "Dune", "status": "requested",
        "delivery_status": None, "updated_at": at(0), "queue_position": None,
        "history": [{"status": "requested", "at": at(0)}],
        "due_at": None, "overdue": False,
    }
    assert view.created_at == at(0)


def test_the_status_follows_the_lifecycle_in_order():
    view = view_after(("reservation_requested", 0), ("reservation_waitlisted", 1),
                      ("reservation_confirmed", 2), ("reservation_shipped", 3),
                      ("reservation_delivered", 4), ("reservation_returned", 5))

    assert view.status == "returned"
    assert [s for s, _ in statuses(view)] == ["requested", "waitlisted", "confirmed", "shipped",
                                              "delivered", "returned"]
    assert (view.created_at, view.updated_at) == (at(0), at(5))


def test_a_late_event_never_moves_the_status_back_but_takes_its_place_in_history():
    view = view_after(("reservation_requested", 0), ("reservation_shipped", 3))

    assert view.apply(event("reservation_confirmed", 2)) is True  # the history changed

    assert view.status == "shipped"
    assert statuses(view) == [("requested", at(0)), ("confirmed", at(2)), ("shipped", at(3))]
    assert view.updated_at == at(3)  # the latest change is still the shipping


def test_events_arriving_in_reverse_order_give_a_history_sorted_by_time():
    view = view_after(("reservation_delivered", 4), ("reservation_shipped", 3),
                      ("reservation_confirmed", 2), ("reservation_requested", 0))

    assert view.status == "delivered"
    assert statuses(view) == [("requested", at(0)), ("confirmed", at(2)), ("shipped", at(3)),
                              ("delivered", at(4))]
    assert (view.created_at, view.updated_at) == (at(0), at(4))


def test_the_first_event_to_arrive_need_not_be_the_request():
    view = view_after(("reservation_confirmed", 2))

    assert view.status == "confirmed"
    assert view.apply(event("reservation_requested", 0)) is True
    assert view.status == "confirmed"
    assert view.created_at == at(0)


@pytest.mark.parametrize("before", ["requested", "waitlisted", "confirmed", "shipped"])
def test_a_reservation_can_be_canceled_from_any_live_status(before):
    view = view_after(("reservation_requested", 0), (f"reservation_{before}", 1))

    assert view.apply(event("reservation_canceled", 2)) is True
    assert view.status == "canceled"
    assert statuses(view)[-1] == ("canceled", at(2))


@pytest.mark.parametrize("final", ["canceled", "returned"])
@pytest.mark.parametrize("late", ["requested", "waitlisted", "confirmed", "shipped", "delivered"])
def test_canceled_and_returned_are_final(final, late):
    view = view_after(("reservation_requested", 0), (f"reservation_{final}", 9))

    view.apply(event(f"reservation_{late}", 5))

    assert view.status == final
    assert statuses(view)[-1] == (final, at(9))
    assert view.updated_at == at(9)


def test_a_cancel_that_arrives_before_everything_else_stays():
    view = view_after(("reservation_canceled", 3), ("reservation_confirmed", 2), ("reservation_requested", 0))

    assert view.status == "canceled"
    assert [s for s, _ in statuses(view)] == ["requested", "confirmed", "canceled"]


# -- duplicates -----------------------------------------------------------------------------

@pytest.mark.parametrize("event_type", ["reservation_requested", "reservation_confirmed",
                                        "delivery_created", "delivery_shipped"])
def test_a_duplicate_event_changes_nothing(event_type):
    view = view_after(("reservation_requested", 0), ("reservation_confirmed", 1),
                      ("delivery_created", 2), ("delivery_shipped", 3))
    before = view.to_dict("Dune"), view.created_at
    duplicate = event(event_type, {"reservation_requested": 0, "reservation_confirmed": 1,
                                   "delivery_created": 2, "delivery_shipped": 3}[event_type])

    assert view.apply(duplicate) is False
    assert view.apply(dict(duplicate)) is False
    assert (view.to_dict("Dune"), view.created_at) == before


def test_an_event_that_is_not_about_a_reservation_or_delivery_is_ignored():
    view = view_after(("reservation_requested", 0))
    before = view.to_dict("Dune")

    assert view.apply({"event_type": "copy_allocated", "occurred_at": at(5)}) is False
    assert view.to_dict("Dune") == before


# -- delivery status ----------------------------------------------------------------------------

def test_the_delivery_status_follows_the_delivery_and_stays_out_of_the_history():
    view = view_after(("reservation_requested", 0), ("reservation_confirmed", 1))

    for event_type, status, minute in [("delivery_created", "preparing", 2),
                                       ("delivery_shipped", "shipped", 3),
                                       ("delivery_delivered", "delivered", 4)]:
        assert view.apply(event(event_type, minute)) is True
        assert view.delivery_status == status
        assert view.updated_at == at(minute)

    assert [s for s, _ in statuses(view)] == ["requested", "confirmed"]
    assert view.status == "confirmed"  # the reservation's own events move its status


@pytest.mark.parametrize("current, late", [
    ("delivery_shipped", "delivery_created"),
    ("delivery_delivered", "delivery_created"),
    ("delivery_delivered", "delivery_shipped"),
    ("delivery_delivered", "delivery_canceled"),
    ("delivery_canceled", "delivery_created"),
    ("delivery_canceled", "delivery_shipped"),
])
def test_the_delivery_status_never_moves_back_and_canceled_or_delivered_is_final(current, late):
    view = view_after(("delivery_created", 1), (current, 5))
    status = view.delivery_status

    assert view.apply(event(late, 3)) is False
    assert view.delivery_status == status
    assert view.updated_at == at(5)


@pytest.mark.parametrize("before", ["delivery_created", "delivery_shipped"])
def test_a_delivery_canceled_before_delivery_shows_canceled(before):
    view = view_after((before, 1))

    assert view.apply(event("delivery_canceled", 2)) is True
    assert view.delivery_status == "canceled"


def test_a_delivery_canceled_before_it_was_created_shows_canceled():
    view = view_after(("delivery_canceled", 1))

    assert view.delivery_status == "canceled"


# -- order does not matter ---------------------------------------------------------------------

HAPPY_PATH = [("reservation_requested", 0), ("reservation_waitlisted", 1), ("reservation_confirmed", 2),
              ("delivery_created", 3), ("delivery_shipped", 4), ("reservation_shipped", 5),
              ("delivery_delivered", 6), ("reservation_delivered", 7), ("reservation_returned", 8)]
CANCELED_PATH = [("reservation_requested", 0), ("reservation_confirmed", 1), ("delivery_created", 2),
                 ("delivery_shipped", 3), ("reservation_shipped", 4), ("delivery_canceled", 5),
                 ("reservation_canceled", 6)]


@pytest.mark.parametrize("path", [HAPPY_PATH, CANCELED_PATH], ids=["returned", "canceled"])
def test_any_arrival_order_with_duplicates_gives_the_same_page(path):
    expected = view_after(*path)
    rng = random.Random(len(path))

    for _ in range(200):
        arrivals = path + rng.sample(path, k=rng.randint(0, len(path)))  # some delivered twice
        rng.shuffle(arrivals)
        view = view_after(*arrivals)
        assert view.to_dict("Dune") == expected.to_dict("Dune"), arrivals
        assert view.created_at == expected.created_at


def test_every_permutation_of_a_short_case_gives_the_same_page():
    steps = [("reservation_requested", 0), ("reservation_confirmed", 1), ("reservation_canceled", 2),
             ("delivery_created", 3), ("delivery_canceled", 4)]
    expected = view_after(*steps).to_dict("Dune")

    for order in itertools.permutations(steps):
        assert view_after(*order).to_dict("Dune") == expected, order
    assert expected["status"] == "canceled" and expected["delivery_status"] == "canceled"


# -- the line (queue_position) ---------------------------------------------------

def test_queue_position_is_one_for_the_next_in_line_and_only_while_waitlisted():
    waiting = view_after(("reservation_requested", 0), ("reservation_waitlisted", 1))
    assert waiting.to_dict("Dune", waiting_ahead=0)["queue_position"] == 1
    assert waiting.to_dict("Dune", waiting_ahead=2)["queue_position"] == 3
    confirmed = view_after(("reservation_requested", 0), ("reservation_waitlisted", 1), ("reservation_confirmed", 2))
    assert confirmed.to_dict("Dune", waiting_ahead=0)["queue_position"] is None
    assert view_after(("reservation_requested", 0)).to_dict("Dune", 0)["queue_position"] is None


def test_the_line_is_ordered_by_the_moment_of_reserving_then_by_id():
    first = view_after(("reservation_requested", 2), ("reservation_waitlisted", 5))
    earlier = ReservationView("r-0", "bob", 7)
    earlier.apply(event("reservation_waitlisted", 3))  # its request is not here yet
    assert first.line_key < earlier.line_key  # for now, by what it knows
    earlier.apply(event("reservation_requested", 1))
    assert earlier.line_key < first.line_key  # reserved first: ahead, as product serves it
    twin = ReservationView("r-2", "carol", 7)
    twin.apply(event("reservation_requested", 2))
    assert first.line_key < twin.line_key  # the same moment: by id


@pytest.mark.parametrize("steps, moved", [
    ([("reservation_requested", 0)], False),
    ([("reservation_requested", 0), ("reservation_waitlisted", 1)], True),
    ([("reservation_requested", 0), ("reservation_waitlisted", 1), ("reservation_confirmed", 2)], True),
    ([("reservation_requested", 0), ("reservation_waitlisted", 1), ("reservation_canceled", 2)], True),
    ([("reservation_requested", 0), ("reservation_waitlisted", 1), ("reservation_waitlisted", 1)], False),
    ([("reservation_requested", 0), ("reservation_confirmed", 1), ("reservation_waitlisted", 2)], False),
])
def test_the_line_moves_when_a_view_joins_or_leaves_it(steps, moved):
    view = view_after(*steps[:-1])
    was_waiting = view.waiting
    view.apply(event(*steps[-1]))
    assert line_moved(was_waiting, view) is moved


# -- the loan (SPEC §8) ------------------------------------------------------------------------

def loan_event(event_type, minute, due_at=None):
    fields = {"reservation_id": "r-1", "book_id": 7, "customer": "alice", "occurred_at": at(minute)}
    if due_at:
        fields["due_at"] = due_at
    if event_type == "loan_renewed":
        fields["renewals"] = 1
    return events.make(event_type, "corr-1", **fields)


def test_due_at_comes_with_the_delivery_and_moves_later_with_a_renewal_in_any_order():
    steps = [loan_event("reservation_delivered", 1, due_at=at(20)), loan_event("loan_renewed", 2, due_at=at(40))]
    for order in (steps, list(reversed(steps))):
        view = ReservationView("r-1", "alice", 7)
        for step in order:
            view.apply(step)
        assert view.to_dict("Dune")["due_at"] == at(40)


def test_overdue_is_set_by_loan_overdue_and_ended_by_the_return_in_any_order():
    view = view_after(("reservation_requested", 0))
    assert view.apply(loan_event("reservation_delivered", 1, due_at=at(5))) is True
    assert view.apply(loan_event("loan_overdue", 6, due_at=at(5))) is True
    assert view.to_dict("Dune")["overdue"] is True
    assert view.apply(loan_event("loan_overdue", 6, due_at=at(5))) is False  # twice: no change
    view.apply(event("reservation_returned", 7))
    assert view.to_dict("Dune")["overdue"] is False

    late = view_after(("reservation_requested", 0), ("reservation_returned", 7))
    late.apply(loan_event("loan_overdue", 6, due_at=at(5)))  # arrives after the return
    assert late.to_dict("Dune")["overdue"] is False
