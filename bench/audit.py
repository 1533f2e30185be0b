"""Was anything lost, or done twice? The checks the fault tests and the soak share.

An audit looks at a quiet system from every side and lists what disagrees:

- every reservation the reservation service holds for the audited titles
  (including ones whose client was told 503, see below) has settled: none
  is still ``requested``, none has a cancel still in flight (a cancel
  intent, reservation/domain.py), and every accepted (202) one exists;
- MyPage shows each of them with the same status, and the delivery status
  that status implies;
- no reservation has two deliveries, and each has the delivery its status
  implies (one once confirmed, none while waitlisted);
- the stock invariant of SPEC §3 holds for every title, the product
  service's waitlist matches the waitlisted reservations, and no copy sits
  in stock while someone waits for it.

The reservations are read from the reservation service's own database, not
from the client's list of 202s: a crash between a commit and its RPC reply
leaves a reservation the client never heard of, and it must settle too.
"""
import collections

from sqlalchemy import bindparam, create_engine, inspect, text

from bench.harness import rpc
from reservation.domain import HOLDS_A_COPY

# What the delivery of a reservation in each status may be (None: no delivery).
DELIVERY_FOR = {
    "waitlisted": {None},
    "confirmed": {"preparing"},
    "shipped": {"shipped"},
    "delivered": {"delivered"},
    "returned": {"delivered"},
    "canceled": {None, "canceled"},
}


class Problem(str):
    """What the audit found wrong, in words; ``kind`` says which guarantee:
    lost, unsettled, mypage, delivery, duplicate, invariant."""

    def __new__(cls, kind, text):
        problem = super().__new__(cls, text)
        problem.kind = kind
        return problem


def stored_reservations(cluster, book_ids):
    """{id: row} of every reservation of these titles, from reservation's database."""
    uri = cluster._process_env()["RESERVATION_DB_URI"]
    engine = create_engine(uri)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT id, book_id, customer, status FROM reservations WHERE book_id IN :ids")
                .bindparams(bindparam("ids", expanding=True)), {"ids": list(book_ids)}).mappings().all()
    finally:
        engine.dispose()
    return {row["id"]: dict(row) for row in rows}


def cancels_in_flight(cluster):
    """The reservation ids with a cancel intent still recorded (the intent
    table is there from reservation's migration 0003_cancel_intent on)."""
    engine = create_engine(cluster._process_env()["RESERVATION_DB_URI"])
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table("cancel_intents"):
                return set()
            return {row[0] for row in connection.execute(text("SELECT reservation_id FROM cancel_intents"))}
    finally:
        engine.dispose()


def audit(cluster, library, book_ids, accepted=(), customers=None):
    """The list of problems (empty when all is well) of a quiet system.

    ``accepted``: reservation ids a client got 202 for; ``customers``:
    {username: bench.harness.Client} whose MyPage to compare (default: every
    customer of the audited reservations must be in it)."""
    problems = []
    reservations = stored_reservations(cluster, book_ids)
    for rid in accepted:
        if rid not in reservations:
            problems.append(Problem("lost", f"accepted reservation {rid} is lost"))
    in_flight = cancels_in_flight(cluster)
    for rid, row in reservations.items():
        if row["status"] == "requested":
            problems.append(Problem("unsettled", f"reservation {rid} is still requested"))
        if rid in in_flight:
            problems.append(Problem("unsettled", f"reservation {rid} ({row['status']}) has a cancel in flight"))

    pages = {}
    for name, client in (customers or {}).items():
        pages.update(library.mypage(client))  # every page of it
    deliveries = collections.defaultdict(list)
    for delivery in library.all_deliveries():
        deliveries[delivery["reservation_id"]].append(delivery)

    for rid, row in reservations.items():
        status = row["status"]
        if customers is not None:
            view = pages.get(rid)
            if view is None:
                problems.append(Problem("mypage", f"reservation {rid} ({status}) is missing from MyPage"))
            elif view["status"] != status:
                problems.append(Problem("mypage", f"reservation {rid} is {status} but MyPage says {view['status']}"))
        own = deliveries.get(rid, [])
        if len(own) > 1:
            problems.append(Problem("duplicate", f"reservation {rid} has {len(own)} deliveries"))
        delivery_status = own[0]["status"] if own else None
        if status in DELIVERY_FOR and delivery_status not in DELIVERY_FOR[status]:
            problems.append(Problem("delivery", f"reservation {rid} is {status} but its delivery is {delivery_status}"))
        if customers is not None and rid in pages and status in DELIVERY_FOR:
            shown = pages[rid]["delivery_status"]
            if shown != delivery_status:
                problems.append(Problem(
                    "mypage", f"reservation {rid}: MyPage shows delivery {shown}, delivery says {delivery_status}"))

    with rpc(cluster.amqp_uri) as services:
        for book_id in book_ids:
            inventory = services.product.inventory(book_id)
            mine = [row for row in reservations.values() if row["book_id"] == book_id]
            live = sum(1 for row in mine if row["status"] in HOLDS_A_COPY)
            waiting = sum(1 for row in mine if row["status"] == "waitlisted")
            if inventory["stock"] < 0 or inventory["stock"] + live != inventory["stocked"]:
                problems.append(Problem("invariant", f"title {book_id}: stock {inventory['stock']} + live {live} "
                                                     f"!= stocked {inventory['stocked']}"))
            if inventory["allocated"] != live:
                problems.append(Problem("invariant", f"title {book_id}: {inventory['allocated']} copies allocated, "
                                                     f"{live} live"))
            if inventory["waiting"] != waiting:
                problems.append(Problem("invariant", f"title {book_id}: product has {inventory['waiting']} waiting, "
                                                     f"reservation {waiting} waitlisted"))
            if inventory["stock"] > 0 and inventory["waiting"] > 0:
                problems.append(Problem("invariant", f"title {book_id}: {inventory['stock']} in stock while "
                                                     f"{waiting} wait"))
    return problems
