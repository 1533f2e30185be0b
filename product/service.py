"""The product service: Nameko adapters around ``product.domain``.

Inbound: RPC for the gateway (register, stock, read the catalogue) and
handlers for ``reservation``'s events (requested, canceled, returned).
Outbound: the store (``models.ProductStore``: the service reads and writes
through its repository, ``models.Catalogue``), whose outbox carries the
allocation events.
"""
import logging

from sqlalchemy.exc import IntegrityError

from common.errors import NotAllowed, NotFound
from common.handlers import handles
from common.outbox import emit_all
from common.rpc import rpc
from common.service import ServiceBase
from product import models
from product.domain import Allocation, REFUSED, Title

log = logging.getLogger(__name__)


class ProductService(ServiceBase):
    name = "product"

    store = models.ProductStore(models.Base)

    @rpc
    def register_book(self, isbn, title, author, copies):
        """A new title; ``isbn`` as an ISBN-10 or -13 (stored as 13 digits).
        A second title with the same ISBN is refused by the database's unique
        index, not by a look first, so it holds between replicas too."""
        try:
            with self.store.transaction() as tx:
                book = Title(isbn, title, author, copies)
                tx.catalogue.add_title(book)  # gives the title its id
                tx.emit("book_registered", book_id=book.id, isbn=book.isbn, title=title, author=author,
                        stock=book.stock)
                registered = book.to_dict()
        except IntegrityError:
            raise NotAllowed("a title with this ISBN is registered already", isbn=book.isbn) from None
        log.info("book registered", extra={"book_id": registered["id"]})
        return registered

    @rpc
    def add_stock(self, book_id, quantity, request_id=None):
        """``request_id``: a request delivered twice (the broker redelivers
        one whose answer a crash cut off) stocks its copies once."""
        with self.store.transaction() as tx:
            book = self._title(tx.catalogue, book_id, for_update=True)
            if request_id and not tx.first_time({"event_id": request_id}, "add_stock"):
                return book.to_dict()
            waitlist = tx.catalogue.waitlist(book_id, limit=book.stock + quantity)
            caused = book.add_copies(quantity, waitlist)
            tx.emit("book_restocked", book_id=book_id, quantity=quantity, stock=book.stock)
            emit_all(tx, caused)
            return book.to_dict()

    @rpc
    def get_book(self, book_id):
        with self.store.catalogue() as catalogue:
            return self._title(catalogue, book_id).to_dict()

    @rpc
    def list_books(self, after_id=0, limit=100, query=None):
        """A page of the catalogue; ``query``: only the titles whose title,
        author or ISBN contains it (``models.matching``)."""
        with self.store.catalogue() as catalogue:
            books = catalogue.titles(after_id, limit + 1, query)
            page = [book.to_dict() for book in books[:limit]]
            return {"items": page, "next": page[-1]["id"] if len(books) > limit else None}

    @rpc
    def inventory(self, book_id):
        """The numbers behind the stock invariant, for operators and tests."""
        with self.store.catalogue() as catalogue:
            book = self._title(catalogue, book_id)
            return {
                "book_id": book_id, "stock": book.stock, "stocked": book.stocked,
                "allocated": catalogue.allocated_count(book_id),
                "waiting": catalogue.waiting_count(book_id),
            }

    # -- what the reservations tell us ----------------------------------

    @handles("reservation", "reservation_requested")
    def on_reservation_requested(self, tx, event):
        if tx.catalogue.has_allocation(event["reservation_id"]):
            return  # already served, or canceled before we heard of it
        # First come, first served: the queue is ordered by when the
        # customer reserved, not by when this event happened to arrive.
        allocation = Allocation(event["reservation_id"], event["book_id"], event["customer"], event["occurred_at"])
        book = tx.catalogue.title(event["book_id"], for_update=True)
        if book is None:
            allocation.state = REFUSED
            tx.catalogue.add_allocation(allocation)
            tx.emit("allocation_refused", reason="no such title", **allocation.event_fields())
            return
        caused = book.reserve(allocation, tx.catalogue.waiting_count(book.id))
        tx.catalogue.add_allocation(allocation)
        emit_all(tx, caused)

    @handles("reservation", "reservation_canceled")
    def on_reservation_canceled(self, tx, event):
        allocation = tx.catalogue.allocation(event["reservation_id"])
        if allocation is None:
            tx.catalogue.add_allocation(Allocation.withdrawn_before_requested(
                event["reservation_id"], event["book_id"], event["customer"], event["occurred_at"]))
            return
        self._release(tx, allocation)

    @handles("reservation", "reservation_returned")
    def on_reservation_returned(self, tx, event):
        allocation = tx.catalogue.allocation(event["reservation_id"])
        if allocation is not None:
            self._release(tx, allocation)

    # -- helpers --------------------------------------------------------

    def _release(self, tx, allocation):
        book = tx.catalogue.title(allocation.book_id, for_update=True)
        if book is None:
            return
        # Every change to a title's allocations is made under its title's lock:
        # read this one again now that we hold it (PostgreSQL, several replicas).
        tx.catalogue.reread(allocation)
        waitlist = tx.catalogue.waitlist(book.id, limit=book.stock + 1)
        emit_all(tx, book.release(allocation, waitlist))

    @staticmethod
    def _title(catalogue, book_id, for_update=False):
        book = catalogue.title(book_id, for_update=for_update)
        if book is None:
            raise NotFound("no such book", book_id=book_id)
        return book
