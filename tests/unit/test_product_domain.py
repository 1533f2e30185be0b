"""Titles, copies and the waiting queue (SPEC §1, §3), without Nameko or a database.

The waitlist handed to the domain is what the service's query gives: the
WAITING allocations of the title, oldest request first.
"""
import random

import pytest

from common.errors import BadRequest
from common.events import TYPES
from product.domain import ALLOCATED, REFUSED, RELEASED, WAITING, WITHDRAWN, Allocation, Title


def at(n):
    return f"2024-05-01T10:00:{n:02d}.000000+00:00"


class Library:
    """One title and the allocations of its reservations, in request order."""

    def __init__(self, copies):
        self.title = Title("9780441172719", "Dune", "Herbert", copies)
        self.allocations = []

    def waitlist(self):
        return [a for a in self.allocations if a.state == WAITING]

    def allocated(self):
        return [a for a in self.allocations if a.state == ALLOCATED]

    def reserve(self):
        n = len(self.allocations)
        allocation = Allocation(f"r-{n}", 1, "alice", at(n))
        self.allocations.append(allocation)
        return allocation, self.title.reserve(allocation, len(self.waitlist()))

    def release(self, allocation):
        return self.title.release(allocation, self.waitlist())

    def add_copies(self, quantity):
        return self.title.add_copies(quantity, self.waitlist())

    def check_invariant(self):
        assert self.title.stock >= 0
        assert self.title.stock + len(self.allocated()) == self.title.stocked
        assert not (self.title.stock > 0 and self.waitlist()), "a copy is free while someone waits"


def kinds(caused):
    return [(event_type, fields["reservation_id"]) for event_type, fields in caused]


# -- a title ----------------------------------------------------------------------

def test_a_new_title_has_its_copies_in_stock():
    title = Title("9780441172719", "Dune", "Herbert", 3)
    title.id = 1  # given by the database

    assert (title.stock, title.stocked) == (3, 3)
    assert title.to_dict() == {"id": 1, "isbn": "9780441172719", "title": "Dune", "author": "Herbert", "stock": 3}


def test_a_title_may_be_registered_with_no_copies():
    assert Title("9780441172719", "Dune", "Herbert", 0).stock == 0


def test_a_title_cannot_have_a_negative_number_of_copies():
    with pytest.raises(BadRequest):
        Title("9780441172719", "Dune", "Herbert", -1)


@pytest.mark.parametrize("quantity", [0, -1])
def test_restocking_needs_at_least_one_copy(quantity):
    library = Library(2)

    with pytest.raises(BadRequest):
        library.add_copies(quantity)
    assert (library.title.stock, library.title.stocked) == (2, 2)


def test_restocking_with_nobody_waiting_adds_to_stock():
    library = Library(2)

    assert library.add_copies(3) == []
    assert (library.title.stock, library.title.stocked) == (5, 5)


# -- reserving ----------------------------------------------------------------------

def test_a_reservation_gets_a_copy_when_one_is_in_stock():
    library = Library(1)

    allocation, caused = library.reserve()

    assert allocation.state == ALLOCATED
    assert library.title.stock == 0
    assert kinds(caused) == [("copy_allocated", "r-0")]
    library.check_invariant()


def test_a_reservation_waits_when_no_copy_is_free_and_learns_its_position():
    library = Library(0)

    first, caused_first = library.reserve()
    second, caused_second = library.reserve()

    assert first.state == second.state == WAITING
    assert library.title.stock == 0
    assert caused_first == [("waitlist_joined", {**first.event_fields(), "position": 1})]
    assert caused_second == [("waitlist_joined", {**second.event_fields(), "position": 2})]
    library.check_invariant()


def test_the_last_copy_goes_to_the_first_reservation_and_the_next_one_waits():
    library = Library(1)

    first, _ = library.reserve()
    second, caused = library.reserve()

    assert (first.state, second.state) == (ALLOCATED, WAITING)
    assert caused == [("waitlist_joined", {**second.event_fields(), "position": 1})]


# -- copies coming back ---------------------------------------------------------------

def test_releasing_an_allocated_copy_with_nobody_waiting_puts_it_back_in_stock():
    library = Library(1)
    allocation, _ = library.reserve()

    caused = library.release(allocation)

    assert allocation.state == RELEASED
    assert library.title.stock == 1
    assert caused == [("copy_released", {**allocation.event_fields(), "stock": 1})]
    library.check_invariant()


def test_a_released_copy_goes_to_the_oldest_waiting_reservation_first():
    library = Library(1)
    holder, _ = library.reserve()
    oldest, _ = library.reserve()
    youngest, _ = library.reserve()

    caused = library.release(holder)

    assert kinds(caused) == [("copy_released", "r-0"), ("copy_allocated", "r-1")]
    assert (holder.state, oldest.state, youngest.state) == (RELEASED, ALLOCATED, WAITING)
    assert library.title.stock == 0
    library.check_invariant()


def test_copy_released_reports_the_stock_the_copy_went_back_to_before_the_queue_is_served():
    library = Library(1)
    holder, _ = library.reserve()
    library.reserve()

    caused = library.release(holder)

    assert caused[0][1]["stock"] == 1
    assert library.title.stock == 0  # the copy went straight on to the waiting reservation


def test_restocking_serves_several_waiting_reservations_in_order_and_keeps_the_rest():
    library = Library(0)
    waiting = [library.reserve()[0] for _ in range(4)]

    caused = library.add_copies(3)

    assert kinds(caused) == [("copy_allocated", "r-0"), ("copy_allocated", "r-1"), ("copy_allocated", "r-2")]
    assert [a.state for a in waiting] == [ALLOCATED, ALLOCATED, ALLOCATED, WAITING]
    assert (library.title.stock, library.title.stocked) == (0, 3)
    library.check_invariant()


def test_restocking_more_than_the_queue_needs_leaves_the_rest_in_stock():
    library = Library(0)
    waiting = [library.reserve()[0] for _ in range(2)]

    caused = library.add_copies(5)

    assert len(caused) == 2
    assert all(a.state == ALLOCATED for a in waiting)
    assert (library.title.stock, library.title.stocked) == (3, 5)
    library.check_invariant()


def test_serving_skips_allocations_that_are_no_longer_waiting():
    title = Title("9780441172719", "Dune", "Herbert", 1)
    gone = Allocation("r-0", 1, "alice", at(0), WITHDRAWN)
    waiting = Allocation("r-1", 1, "bob", at(1), WAITING)

    caused = title.serve([gone, waiting])

    assert kinds(caused) == [("copy_allocated", "r-1")]
    assert (gone.state, waiting.state, title.stock) == (WITHDRAWN, ALLOCATED, 0)


def test_canceling_a_waiting_reservation_withdraws_it_without_touching_stock():
    library = Library(0)
    first, _ = library.reserve()
    second, _ = library.reserve()

    caused = library.release(first)

    assert caused == []
    assert first.state == WITHDRAWN
    assert library.title.stock == 0
    assert library.waitlist() == [second]

    library.add_copies(1)
    assert (first.state, second.state) == (WITHDRAWN, ALLOCATED)  # the withdrawn one is skipped
    library.check_invariant()


@pytest.mark.parametrize("state", [RELEASED, WITHDRAWN, REFUSED, None])
def test_releasing_what_holds_no_copy_changes_nothing(state):
    # a duplicate cancel or return, or one for a reservation that never got a copy
    library = Library(0)
    waiting, _ = library.reserve()
    allocation = Allocation("r-x", 1, "bob", at(50), state)
    library.title.stock = library.title.stocked = 1  # a copy is free: it must not be touched

    assert library.title.release(allocation, []) == []
    assert allocation.state == state
    assert library.title.stock == 1


def test_releasing_twice_frees_the_copy_once():
    library = Library(1)
    allocation, _ = library.reserve()
    library.release(allocation)

    assert library.release(allocation) == []
    assert (library.title.stock, library.title.stocked) == (1, 1)
    library.check_invariant()


def test_a_cancel_that_overtakes_the_request_is_remembered_as_withdrawn():
    allocation = Allocation.withdrawn_before_requested("r-0", 1, "alice", at(0))

    assert allocation.state == WITHDRAWN
    assert allocation.event_fields() == {"reservation_id": "r-0", "book_id": 1, "customer": "alice"}


# -- the invariant under any sequence of operations ------------------------------------------

@pytest.mark.parametrize("seed", range(25))
def test_stock_plus_allocated_equals_stocked_under_any_sequence_of_operations(seed):
    """Model-based: random reserves, cancels, returns, duplicate releases and restocks.

    After every step: stock >= 0, stock + allocated == stocked, nobody waits
    while a copy is free, and copies freed for the queue go to the oldest
    waiting reservations first (the served ones are a prefix of the queue)."""
    rng = random.Random(seed)
    library = Library(rng.randint(0, 3))
    emitted = set()

    for _ in range(150):
        queue_before = library.waitlist()
        allocated_before = set(map(id, library.allocated()))
        operation = rng.choices(["reserve", "release", "release_any", "restock"], weights=[5, 3, 1, 1])[0]

        if operation == "reserve":
            _, caused = library.reserve()
        elif operation == "release" and (library.allocated() or queue_before):
            caused = library.release(rng.choice(library.allocated() + queue_before))
        elif operation == "release_any" and library.allocations:
            caused = library.release(rng.choice(library.allocations))  # duplicates, withdrawn, released...
        else:
            caused = library.add_copies(rng.randint(1, 3))

        library.check_invariant()
        served = [a for a in queue_before if a.state == ALLOCATED]
        assert served == queue_before[:len(served)], "the queue was not served oldest first"
        newly_allocated = [a for a in library.allocations
                           if a.state == ALLOCATED and id(a) not in allocated_before]
        assert sorted(a.reservation_id for a in newly_allocated) == sorted(
            fields["reservation_id"] for event_type, fields in caused if event_type == "copy_allocated")
        emitted.update(event_type for event_type, _ in caused)

    assert emitted <= set(TYPES)


@pytest.mark.parametrize("typed", ["978-0-441-17271-9", "9780441172719", "0-441-17271-7", "0441172717",
                                   " 978 0 441 17271 9 "])
def test_a_title_keeps_its_isbn_as_13_digits(typed):
    assert Title(typed, "Dune", "Herbert", 1).isbn == "9780441172719"


def test_an_isbn_10_ending_in_x_becomes_its_isbn_13():
    assert Title("0-8044-2957-X", "A title", "Someone", 1).isbn == "9780804429573"


@pytest.mark.parametrize("typed, problem", [
    ("978-0-00-000000-0", "check digit"), ("0-441-17271-8", "check digit"), ("97804411727", "10 or 13"),
    ("977-0-441-17271-9", "check digit"), ("abc", "digits"), ("", "digits")])
def test_a_title_refuses_an_isbn_that_is_not_one(typed, problem):
    with pytest.raises(BadRequest) as error:
        Title(typed, "Dune", "Herbert", 1)
    assert problem in error.value.message and list(error.value.details) == ["isbn"]
