"""MyPage's view store, one contract for every adapter: SQL on SQLite, SQL on
PostgreSQL, Redis. The real handlers (``MyPageService`` with ``@handles``) run
against the real servers; only the broker is left out (the publisher records).

The contract: a change and the id of the event that caused it are written
together, once; an event emitted in the same write is in the outbox and is
published (after the commit, or by the relay after a failure); the
``mypage_changed`` a change causes is announced after the commit, kept in no
outbox; two replicas applying events to the same view lose nothing."""
import eventlet
import pytest
import redis

from common import events
from mypage import models
from mypage.service import MyPageService
from mypage.views import RedisViewStore, ViewConflict, ViewStore, split_prefix
from stores import replica, set_up

ADAPTERS = ["sqlite", "postgresql", "redis"]


@pytest.fixture(params=ADAPTERS)
def uri(request, tmp_path, pg_database):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/mypage.db"
    if request.param == "postgresql":
        return pg_database("mypage")
    return request.getfixturevalue("redis_uri")


@pytest.fixture
def open_store(uri):
    """open_store() -> (store, service): one more replica on the same data."""
    opened = []

    def make():
        provider = ViewStore(models.Base)
        store = set_up(provider, MyPageService, uri)
        opened.append(store)
        return store, replica(MyPageService, provider)

    yield make
    for store in opened:
        store.kill()


def step(event_type, reservation_id="r-1", customer="alice", book_id=7):
    fields = {"reservation_id": reservation_id, "book_id": book_id, "customer": customer}
    if event_type.startswith("delivery_"):
        fields.update(delivery_id="d-1", status=event_type.split("_")[1])
    return events.make(event_type, "corr-1", **fields)


def handle(service, event):
    getattr(service, f"on_{event['event_type']}")(event)


def page(service, customer="alice"):
    return {row["reservation_id"]: row for row in service.get(customer)["reservations"]}


def changes(store):
    return [e for e in store.publisher.sent if e["event_type"] == "mypage_changed"]


def test_the_story_builds_the_row_and_announces_each_change(open_store):
    store, service = open_store()
    service.on_book_registered(events.make("book_registered", "c", book_id=7, isbn="1", title="Dune",
                                           author="F. H.", stock=1))
    story = ["reservation_requested", "reservation_confirmed", "delivery_created", "delivery_shipped",
             "reservation_shipped", "delivery_delivered", "reservation_delivered"]
    for event_type in story:
        handle(service, step(event_type))

    row = page(service)["r-1"]
    assert (row["title"], row["status"], row["delivery_status"]) == ("Dune", "delivered", "delivered")
    assert [h["status"] for h in row["history"]] == ["requested", "confirmed", "shipped", "delivered"]
    assert len(changes(store)) == len(story), [(c["status"], c["delivery_status"]) for c in changes(store)]
    assert changes(store)[-1]["status"] == "delivered"
    assert store.backlog() == 0  # every event published and marked


def test_a_loan_shows_its_due_date_and_overdue_until_returned(open_store):
    store, service = open_store()
    due, later = "2024-05-15T10:00:00.000000+00:00", "2024-05-29T10:00:00.000000+00:00"
    loan = {"reservation_id": "r-1", "book_id": 7, "customer": "alice"}
    handle(service, step("reservation_requested"))
    handle(service, events.make("reservation_delivered", "c", due_at=due, **loan))
    assert (page(service)["r-1"]["due_at"], page(service)["r-1"]["overdue"]) == (due, False)
    handle(service, events.make("loan_renewed", "c", due_at=later, renewals=1, **loan))
    handle(service, events.make("loan_overdue", "c", due_at=later, **loan))
    assert (page(service)["r-1"]["due_at"], page(service)["r-1"]["overdue"]) == (later, True)
    handle(service, step("reservation_returned"))
    assert page(service)["r-1"]["overdue"] is False


def test_the_same_event_twice_changes_the_view_once(open_store):
    store, service = open_store()
    twice = step("reservation_requested")
    handle(service, twice)
    handle(service, dict(twice))
    assert len(changes(store)) == 1
    assert [h["status"] for h in page(service)["r-1"]["history"]] == ["requested"]


def test_a_page_lists_the_customers_rows_newest_first_and_only_theirs(open_store):
    _, service = open_store()
    for rid, customer in [("r-a", "alice"), ("r-b", "bob"), ("r-c", "alice")]:
        handle(service, step("reservation_requested", reservation_id=rid, customer=customer))
        eventlet.sleep(0.002)  # distinct creation times
    assert list(page(service)) == ["r-c", "r-a"]
    assert list(page(service, "bob")) == ["r-b"]
    assert page(service, "nobody") == {}
    assert service.get("nobody")["next"] is None


def test_pages_cover_every_row_once_newest_first_whatever_changes_between_them(open_store):
    """Seven reservations, three of them made at the same moment (ties go by
    id), read three at a time; between two pages a row already shown and
    one not yet shown change: no row repeats, none is skipped."""
    _, service = open_store()
    moments = ["2026-01-01T10:00:00.000001+00:00", "2026-01-01T10:00:00.000002+00:00"] + \
        ["2026-01-01T10:00:00.000003+00:00"] * 3 + ["2026-01-01T10:00:00.000004+00:00",
                                                   "2026-01-01T10:00:00.000005+00:00"]
    for n, at in enumerate(moments):
        handle(service, {**step("reservation_requested", reservation_id=f"r-{n}"), "occurred_at": at})
    handle(service, step("reservation_requested", reservation_id="r-bob", customer="bob"))
    seen, before, pages = [], None, 0
    while True:
        answer = service.get("alice", 3, before)
        assert len(answer["reservations"]) <= 3
        seen += [row["reservation_id"] for row in answer["reservations"]]
        pages += 1
        if pages == 1:  # the newest row (shown) and an older one (not yet) change
            handle(service, step("reservation_confirmed", reservation_id="r-6"))
            handle(service, step("reservation_canceled", reservation_id="r-0"))
        before = answer["next"]
        if before is None:
            break
    assert seen == ["r-6", "r-5", "r-4", "r-3", "r-2", "r-1", "r-0"]
    assert pages == 3
    assert [r["reservation_id"] for r in service.get("alice", 7)["reservations"]] == seen
    assert service.get("alice", 7)["next"] is None
    assert service.get("alice", 6)["next"] is not None


def test_queue_position_follows_the_line_and_its_moves_are_announced(open_store):
    """Three customers wait for one title: positions 1, 2, 3 in the order they
    reserved; the first is confirmed, someone ahead cancels: the others move
    up, and each one whose place changed is told (mypage_changed)."""
    store, service = open_store()
    line = [("r-a", "alice"), ("r-b", "bob"), ("r-c", "carol"), ("r-d", "dave")]
    for rid, customer in line:
        handle(service, step("reservation_requested", reservation_id=rid, customer=customer))
        eventlet.sleep(0.002)  # distinct reservation times: the order of the line
    for rid, customer in reversed(line):  # joining the line out of order changes nothing
        handle(service, step("reservation_waitlisted", reservation_id=rid, customer=customer))

    def positions():
        return {rid: page(service, customer)[rid]["queue_position"] for rid, customer in line}

    assert positions() == {"r-a": 1, "r-b": 2, "r-c": 3, "r-d": 4}
    before = len(changes(store))
    handle(service, step("reservation_confirmed", reservation_id="r-a", customer="alice"))
    assert positions() == {"r-a": None, "r-b": 1, "r-c": 2, "r-d": 3}
    told = [c["reservation_id"] for c in changes(store)[before:]]
    assert sorted(told) == ["r-a", "r-b", "r-c", "r-d"]
    before = len(changes(store))
    handle(service, step("reservation_canceled", reservation_id="r-c", customer="carol"))
    assert positions() == {"r-a": None, "r-b": 1, "r-c": None, "r-d": 2}
    assert sorted(c["reservation_id"] for c in changes(store)[before:]) == ["r-c", "r-d"]
    handle(service, step("reservation_waitlisted", reservation_id="r-b", customer="bob"))  # again: nothing moves
    assert positions() == {"r-a": None, "r-b": 1, "r-c": None, "r-d": 2}


def test_an_event_not_published_stays_in_the_outbox_until_the_relay_sends_it(open_store):
    store, _ = open_store()
    store.publisher.fail = True
    with store.transaction() as tx:  # any persistent event; mypage itself emits only hints
        tx.emit("book_restocked", book_id=7, quantity=1, stock=1)
    assert store.backlog() == 1 and store.publisher.sent == []
    store.publisher.fail = False
    assert store.relay_pending(older_than=0) == 1
    assert store.backlog() == 0
    [restocked] = store.publisher.sent
    assert restocked["event_type"] == "book_restocked" and restocked["book_id"] == 7


def test_mypage_changed_is_announced_after_the_commit_and_kept_in_no_outbox(open_store):
    store, service = open_store()
    handle(service, step("reservation_requested"))
    assert store.backlog() == 0
    [changed] = changes(store)
    assert changed["status"] == "requested"
    store.publisher.fail = True  # a hint lost with the broker: the page still shows it
    handle(service, step("reservation_confirmed"))
    assert store.backlog() == 0 and store.relay_pending(older_than=0) == 0
    assert page(service)["r-1"]["status"] == "confirmed"


def test_two_replicas_applying_events_to_one_view_lose_nothing(open_store):
    """Two replicas, each applying half of a reservation's events at the same
    time. A replica that finds the view changed under it (Redis: ViewConflict;
    SQL: a key clash) retries, as the handler's retry would."""
    (store1, one), (store2, two) = open_store(), open_store()
    story = ["reservation_requested", "reservation_confirmed", "delivery_created", "delivery_shipped",
             "reservation_shipped", "delivery_delivered", "reservation_delivered"]
    retried = []

    def apply(service, event_types, reservation_id):
        for event_type in event_types:
            event = step(event_type, reservation_id=reservation_id)
            for attempt in range(20):
                try:
                    handle(service, event)
                    break
                except Exception as error:  # noqa: BLE001 - what the handler's retry does
                    retried.append(type(error).__name__)
                    eventlet.sleep(0.001 * attempt)
            eventlet.sleep(0)

    for n in range(10):
        rid = f"r-{n}"
        threads = [eventlet.spawn(apply, one, story[0::2], rid), eventlet.spawn(apply, two, story[1::2], rid)]
        for thread in threads:
            thread.wait()

    rows = page(one)
    for n in range(10):
        row = rows[f"r-{n}"]
        assert (row["status"], row["delivery_status"]) == ("delivered", "delivered"), row
        assert [h["status"] for h in row["history"]] == ["requested", "confirmed", "shipped", "delivered"], row
    assert set(retried) <= {"ViewConflict", "IntegrityError"}


# -- Redis only: what WATCH/MULTI/EXEC guarantees --------------------------------------------


@pytest.mark.parametrize("uri", ["redis"], indirect=True)
def test_redis_a_transaction_that_lost_the_race_writes_nothing(open_store):
    store, service = open_store()
    _, other_replica = open_store()
    handle(service, step("reservation_requested"))
    late = step("reservation_confirmed")
    with pytest.raises(ViewConflict):
        with store.transaction() as tx:
            assert tx.first_time(late, "on_reservation_confirmed")
            view = tx.views.get("r-1")
            handle(other_replica, step("delivery_created"))  # meanwhile
            view.apply(late)
            tx.emit("mypage_changed", reservation_id="r-1", book_id=7, customer="alice",
                    status=view.status, delivery_status=view.delivery_status)
    client = store.client
    assert not client.exists(f"{store.prefix}:processed:on_reservation_confirmed:{late['event_id']}")
    assert page(service)["r-1"]["status"] == "requested"
    assert len(changes(store)) == 1  # requested; not the lost one
    handle(service, late)  # the retry applies it on top of the other change
    row = page(service)["r-1"]
    assert (row["status"], row["delivery_status"]) == ("confirmed", "preparing")


@pytest.mark.parametrize("uri", ["redis"], indirect=True)
def test_redis_keys_live_under_the_prefix_and_applied_marks_expire(open_store):
    store, service = open_store()
    event = step("reservation_requested")
    handle(service, event)
    keys = {key.decode() for key in store.client.scan_iter(match=f"{store.prefix}:*")}
    assert keys == {f"{store.prefix}:view:r-1", f"{store.prefix}:customer:alice",
                    f"{store.prefix}:processed:on_reservation_requested:{event['event_id']}"}
    ttl = store.client.ttl(f"{store.prefix}:processed:on_reservation_requested:{event['event_id']}")
    assert 0 < ttl <= store.retention


def test_the_redis_uri_carries_its_prefix():
    assert split_prefix("redis://h:6379/2?prefix=a-b&socket_timeout=3") == ("redis://h:6379/2?socket_timeout=3", "a-b")
    assert split_prefix("redis://h:6379/0") == ("redis://h:6379/0", "bookrental:mypage")
    client = redis.Redis.from_url(split_prefix("redis://h:6379/2?prefix=x")[0])
    assert client.connection_pool.connection_kwargs["db"] == 2
