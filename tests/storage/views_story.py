"""A story for any store: replicas racing on the same rows."""
import concurrent.futures

from helpers import assert_invariant, eventually


def mypage_replicas_agree_with_the_reservations(system, library, replicas, product_replicas=1):
    """12 customers' worth of reservations for 4 copies, with ``replicas``
    MyPage (and ``product_replicas`` product) processes applying the events
    in parallel: afterwards every MyPage row shows its reservation's status
    and a full history, and the stock invariant holds."""
    book = library.new_book(copies=4)
    system.start("mypage", replicas=replicas)
    if product_replicas > 1:
        system.start("product", replicas=product_replicas)
    try:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            reservations = list(pool.map(lambda _: library.reserve(library.alice, book["id"]), range(12)))
        ids = [r["id"] for r in reservations]
        statuses = eventually(lambda: (s := {rid: library.status(rid) for rid in ids})
                              and "requested" not in s.values() and s, timeout=30)
        assert sorted(statuses.values()).count("confirmed") == 4

        def rows_agree():
            page = library.mypage(library.alice)
            return all(rid in page and page[rid]["status"] == statuses[rid] for rid in ids) and page

        page = eventually(rows_agree, timeout=30, message="every MyPage row at its reservation's status")
        for rid in ids:
            history = [entry["status"] for entry in page[rid]["history"]]
            assert history == ["requested", statuses[rid]], (rid, history)
            if statuses[rid] == "confirmed":
                eventually(lambda: library.mypage(library.alice)[rid]["delivery_status"] == "preparing")
        assert_invariant(system.amqp_uri, library, book["id"], ids)
    finally:
        system.start("mypage", replicas=1)
        system.start("product", replicas=1)
