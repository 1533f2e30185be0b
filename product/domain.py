"""Titles, their copies in stock, and who gets the next copy.

The rule this module keeps, for every title, at every quiet moment:

    stock + copies allocated = copies ever stocked,   stock >= 0

A reservation gets a copy if one is free, or joins the title's waitlist;
every copy that comes back (restock, cancel, return) goes to the oldest
waiting reservation first. Each reservation has one ``Allocation`` here that
remembers where it stands, so a duplicate or late event can be recognised
and ignored: that is what keeps a copy from being allocated twice or lost.
"""
from common import isbn as isbns
from common.errors import BadRequest

WAITING = "waiting"  # in the waitlist
ALLOCATED = "allocated"  # holds a copy
RELEASED = "released"  # its copy went back to stock (canceled or returned)
WITHDRAWN = "withdrawn"  # canceled before it got a copy (or before we heard of it)
REFUSED = "refused"  # names a title we do not have


class Title:
    def __init__(self, isbn, title, author, copies):
        if copies < 0:
            raise BadRequest("copies must be 0 or more")
        try:
            self.isbn = isbns.to_isbn13(isbn)  # one book, one ISBN: 13 digits however it was typed
        except ValueError as error:
            raise BadRequest(str(error), isbn=[str(error)]) from None
        self.title = title
        self.author = author
        self.stock = copies
        self.stocked = copies

    def add_copies(self, quantity, waitlist):
        if quantity < 1:
            raise BadRequest("quantity must be 1 or more")
        self.stock += quantity
        self.stocked += quantity
        return self.serve(waitlist)

    def reserve(self, allocation, waiting_ahead):
        """A new reservation: a copy if one is free, else the back of the queue."""
        if self.stock > 0:
            return self._allocate(allocation)
        allocation.state = WAITING
        return [("waitlist_joined", {**allocation.event_fields(), "position": waiting_ahead + 1})]

    def release(self, allocation, waitlist):
        """The reservation is over (canceled or returned): free what it holds."""
        if allocation.state == ALLOCATED:
            allocation.state = RELEASED
            self.stock += 1
            return [("copy_released", {**allocation.event_fields(), "stock": self.stock})] + self.serve(waitlist)
        if allocation.state == WAITING:
            allocation.state = WITHDRAWN
        return []

    def serve(self, waitlist):
        """Give free copies to the waiting reservations, oldest first."""
        caused = []
        for allocation in waitlist:
            if self.stock == 0:
                break
            if allocation.state == WAITING:
                caused += self._allocate(allocation)
        return caused

    def _allocate(self, allocation):
        self.stock -= 1
        allocation.state = ALLOCATED
        return [("copy_allocated", allocation.event_fields())]

    def to_dict(self):
        return {"id": self.id, "isbn": self.isbn, "title": self.title, "author": self.author, "stock": self.stock}


class Allocation:
    """Where one reservation stands with respect to the copies of its title."""

    def __init__(self, reservation_id, book_id, customer, requested_at, state=None):
        self.reservation_id = reservation_id
        self.book_id = book_id
        self.customer = customer
        self.requested_at = requested_at
        self.state = state

    @classmethod
    def withdrawn_before_requested(cls, reservation_id, book_id, customer, at):
        """The cancel overtook the request: remember it, so the request,
        when it arrives, is ignored rather than served."""
        return cls(reservation_id, book_id, customer, at, WITHDRAWN)

    def event_fields(self):
        return {"reservation_id": self.reservation_id, "book_id": self.book_id, "customer": self.customer}
