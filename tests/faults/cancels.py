"""What the cancel's fault tests share (test_cancel.py, test_cancel_broker.py):
a system whose cancel fault points are armed on ``gate``, a confirmed
reservation of one's own, and the two ends a cancel may reach: canceled
everywhere, or unchanged everywhere."""
import contextlib

from sqlalchemy import create_engine, text

from bench.audit import cancels_in_flight, stored_reservations
from chaos import new_customer, settle
from helpers import eventually, rpc, running_system

# The fault points of the cancel (common/faults.py), all on ``gate``.
POINTS = ("reservation.cancel.before-delivery", "reservation.cancel.after-delivery",
          "reservation.delivery-canceled.before-apply", "delivery.cancel.before-reply")
CANCEL_TIMEOUT = 2.0  # running_system's
RPC_TIMEOUT = 5.0  # the gateway's (config.yml)


@contextlib.contextmanager
def gated_system(state, env=None, amqp_uri=None):
    """``running_system`` with the cancel's fault points on ``gate`` (files in
    ``cluster.gates``) and the cancel recovery every second. A process that
    crashes stays down until the test starts it again: each window is
    looked at while it is open."""
    gates = state / "gates"
    gates.mkdir()
    env = {
        "BOOKRENTAL_FAULT": ",".join(f"{point}:gate" for point in POINTS),
        "BOOKRENTAL_FAULT_GATES": str(gates),
        "CANCEL_RECOVERY_INTERVAL": "1",
        # Each test fails a call to delivery on purpose; the breaker
        # (tests/faults/test_circuit_breaker.py) must not turn the next
        # test's call away before it reaches delivery.
        "CIRCUIT_FAIL_MAX": "1000",
        **(env or {}),
    }
    with running_system(state, env, amqp_uri=amqp_uri, heal=False) as cluster:
        cluster.gates = str(gates)
        yield cluster


def confirmed_reservation(library):
    """A customer of their own, a title with one copy, and its reservation,
    confirmed and with its delivery prepared."""
    customer = new_customer(library)
    book = library.new_book(copies=1)
    reservation = library.reserve(customer, book["id"])
    library.wait_status(reservation["id"], "confirmed")
    library.delivery_for(reservation["id"])
    return customer, book, reservation["id"]


def database(system, service):
    return create_engine(system._process_env()[f"{service.upper()}_DB_URI"])


def emitted(system, service, event_type, reservation_id):
    """How many ``event_type`` events about the reservation ``service`` wrote to its outbox."""
    engine = database(system, service)
    try:
        with engine.connect() as connection:
            return connection.execute(
                text("SELECT COUNT(*) FROM outbox WHERE event_type = :type AND payload LIKE :rid"),
                {"type": event_type, "rid": f'%"{reservation_id}"%'}).scalar()
    finally:
        engine.dispose()


def stored_status(system, book, reservation_id):
    return stored_reservations(system, [book["id"]])[reservation_id]["status"]


def delivery_status(system, reservation_id):
    with rpc(system.amqp_uri) as services:
        return services.delivery.statuses([reservation_id])[reservation_id]


def inventory(system, book):
    with rpc(system.amqp_uri) as services:
        return services.product.inventory(book["id"])


def canceled_everywhere(system, library, customer, book, reservation_id):
    """Both canceled, the copy back once, MyPage canceled/canceled, one
    reservation_canceled: reached by the system alone, within seconds."""
    eventually(lambda: stored_status(system, book, reservation_id) == "canceled", timeout=20,
               message="reservation canceled")
    assert delivery_status(system, reservation_id) == "canceled"
    eventually(lambda: inventory(system, book)["stock"] == 1, message="the copy back in stock")
    eventually(lambda: library.mypage(customer)[reservation_id]["status"] == "canceled"
               and library.mypage(customer)[reservation_id]["delivery_status"] == "canceled",
               message="MyPage canceled / canceled")
    settle(system, library, [book["id"]], [reservation_id], {customer.username: customer})
    assert emitted(system, "reservation", "reservation_canceled", reservation_id) == 1
    assert inventory(system, book) == {"book_id": book["id"], "stock": 1, "stocked": 1, "allocated": 0,
                                       "waiting": 0}


def unchanged_everywhere(system, library, customer, book, reservation_id):
    """Nothing changed, and the intent left by the failed cancel is dropped."""
    eventually(lambda: reservation_id not in cancels_in_flight(system), timeout=20,
               message="the cancel intent dropped")
    assert stored_status(system, book, reservation_id) == "confirmed"
    assert delivery_status(system, reservation_id) == "preparing"
    assert inventory(system, book)["stock"] == 0
    row = library.mypage(customer)[reservation_id]
    assert (row["status"], row["delivery_status"]) == ("confirmed", "preparing")
    assert emitted(system, "reservation", "reservation_canceled", reservation_id) == 0
    settle(system, library, [book["id"]], [reservation_id], {customer.username: customer})


def cancel_in_background(pool, customer, reservation_id):
    return pool.submit(customer.post, f"/reservations/{reservation_id}/cancel", timeout=30)
