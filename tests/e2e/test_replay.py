"""The event log (SPEC §10), end to end on a system of this module's own:
every published event is in ``events.log``; ``make events`` tells one
reservation's story; ``make replay`` rebuilds MyPage and the notices from
the log alone, while reservations keep coming, and both answer exactly as
before, with no notice mailed again.

One history serves every test (module fixture): it is built once, with every
kind of event the running code emits."""
import os
import subprocess
import sys
import threading
import time
import uuid

import pytest

from common import eventlog, events
from helpers import Client, Library, eventually, running_system
from ops import replay
from ops.events import story
from ops.mailcatcher import caught
from ops.run import ROOT

pytestmark = pytest.mark.e2e

# What the history below makes happen (allocation_refused needs a title that
# does not exist, which the gateway refuses before any event).
HISTORY_TYPES = {
    "product": ["book_registered", "book_restocked", "copy_allocated", "waitlist_joined", "copy_released"],
    "reservation": ["reservation_requested", "reservation_waitlisted", "reservation_confirmed", "reservation_shipped",
                    "reservation_delivered", "reservation_returned", "reservation_canceled"],
    "delivery": ["delivery_created", "delivery_shipped", "delivery_delivered", "delivery_canceled"],
    "mypage": ["mypage_changed"],
    "gateway": ["customer_updated"],
}


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    with running_system(tmp_path_factory.mktemp("eventlog"), env={
            "SMTP_RETRY_MAX_SECONDS": "1", "LOAN_PERIOD_SECONDS": "6", "DUE_SOON_SECONDS": "4",
            "OVERDUE_CHECK_SECONDS": "1"}) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def library(system):
    return Library(system.gateway_url)


def sign_up(library, email):
    name = f"reader-{uuid.uuid4().hex[:8]}"
    library.anonymous.ok("POST", "/auth/register", 201, json={
        "username": name, "password": "a good long secret", "email": email})
    return Client.signed_in(library.url, name, "a good long secret")


def deliver(library, reservation_id):
    delivery = library.delivery_for(reservation_id)
    library.courier.ok("POST", f"/deliveries/{delivery['id']}/ship")
    library.courier.ok("POST", f"/deliveries/{delivery['id']}/deliver")
    library.wait_status(reservation_id, "delivered")


def mails(system, but=None):
    """The Message-IDs of the mails caught (but not those to ``but``)."""
    return sorted(message["Message-ID"] for _, message in caught(system.mail_dir) if message["To"] != but)


@pytest.fixture(scope="module")
def history(system, library):
    """Several customers, each step of the lifecycle, a waitlist, a cancel
    with its delivery, a restock, a changed contact."""
    first = sign_up(library, "first@example.org")
    second = sign_up(library, "second@example.org")
    third = sign_up(library, "third@example.org")
    third.ok("PATCH", "/account", json={"address": "3 Third Street"})
    book = library.new_book(copies=1, title="The Dispossessed")
    other = library.new_book(copies=0, title="Solaris")
    lent = library.reserve(first, book["id"])
    library.wait_status(lent["id"], "confirmed")
    waiting = library.reserve(second, book["id"])
    library.wait_status(waiting["id"], "waitlisted")
    deliver(library, lent["id"])
    first.ok("POST", f"/reservations/{lent['id']}/return")
    library.wait_status(waiting["id"], "confirmed")
    canceled = library.reserve(third, other["id"])
    library.wait_status(canceled["id"], "waitlisted")
    library.librarian.ok("POST", f"/books/{other['id']}/stock", json={"quantity": 1})
    library.wait_status(canceled["id"], "confirmed")
    library.delivery_for(canceled["id"])
    third.ok("POST", f"/reservations/{canceled['id']}/cancel")
    customers = {"first": first, "second": second, "third": third}
    ids = {"lent": lent["id"], "waiting": waiting["id"], "canceled": canceled["id"]}
    eventually(lambda: library.mypage(third)[ids["canceled"]]["delivery_status"] == "canceled", timeout=30)
    eventually(lambda: len(third.ok("GET", "/notifications")["items"]) >= 1, timeout=30)
    eventually(lambda: len(mails(system)) >= 5, timeout=30)
    time.sleep(3)  # the last events, notices and mails settle
    return customers, ids


def pages(customers):
    return {name: (client.ok("GET", "/mypage"),
                   sorted(client.ok("GET", "/notifications")["items"], key=lambda n: n["id"]))
            for name, client in customers.items()}


def test_every_published_event_is_in_the_log(system, history):
    customers, ids = history
    found = {(entry.producer, entry.event_type) for entry in eventlog.read(system.amqp_uri, system.config)}
    expected = {(producer, name) for producer, names in HISTORY_TYPES.items() for name in names}
    assert expected <= found, expected - found
    entry = next(e for e in eventlog.read(system.amqp_uri, system.config) if e.event_type == "reservation_requested")
    assert events.parse("reservation_requested", entry.event)  # the envelope and all
    assert entry.headers.get("nameko.correlation_id") == entry.event["correlation_id"]


def test_make_events_tells_one_reservation_s_story_in_order(system, history):
    customers, ids = history
    entries, scanned = story(system.amqp_uri, system.config, ids["lent"])
    kinds = [entry.event_type for entry in entries]
    for earlier, later in [("reservation_requested", "copy_allocated"), ("copy_allocated", "reservation_confirmed"),
                           ("delivery_created", "delivery_shipped"), ("reservation_shipped", "reservation_delivered"),
                           ("reservation_delivered", "reservation_returned"), ("reservation_returned", "copy_released")]:
        assert kinds.index(earlier) < kinds.index(later), kinds
    assert {entry.producer for entry in entries} >= {"reservation", "product", "delivery", "mypage"}
    assert scanned > len(entries)

    env = {**os.environ, **system.env, "BOOKRENTAL_VAR": system.state_dir, "PYTHONPATH": ROOT}
    result = subprocess.run([sys.executable, "-m", "ops.events", ids["lent"]], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(entries)
    when, producer, event_type, correlation_id, fields = lines[0].split("  ", 4)
    assert (producer, event_type) == ("reservation", "reservation_requested")
    assert correlation_id == entries[0].event["correlation_id"] and when == entries[0].event["occurred_at"]
    assert f"book_id={entries[0].event['book_id']}" in fields
    assert [line.split("  ")[2] for line in lines] == kinds
    unknown = subprocess.run([sys.executable, "-m", "ops.events", "no-such-reservation", "--since", "1h"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 1 and unknown.stdout == "" and "0 event(s)" in unknown.stderr


def test_a_librarian_traces_a_reservation_through_the_gateway(system, library, history):
    """GET /reservations/{id}/events: the story make events tells, for
    librarians only, paged; 404 when the log holds nothing of it."""
    customers, ids = history
    path = f"/reservations/{ids['lent']}/events"
    assert library.anonymous.get(path).status_code == 401
    for someone in (customers["first"], library.courier):
        assert someone.get(path).status_code == 403
    answer = library.librarian.ok("GET", path)
    entries, _ = story(system.amqp_uri, system.config, ids["lent"])
    assert [item["event_id"] for item in answer["items"]] == [entry.event["event_id"] for entry in entries]
    assert answer["next"] is None
    first = answer["items"][0]
    assert (first["producer"], first["event_type"]) == ("reservation", "reservation_requested")
    assert first["correlation_id"] == entries[0].event["correlation_id"]
    assert first["occurred_at"] == entries[0].event["occurred_at"]
    assert first["fields"]["book_id"] == entries[0].event["book_id"] and "event_id" not in first["fields"]

    paged, cursor = [], None  # a page at a time, the same story
    while True:
        page = library.librarian.ok("GET", path, params={"limit": 7, **({"cursor": cursor} if cursor else {})})
        paged += page["items"]
        cursor = page["next"]
        if cursor is None:
            break
        assert len(page["items"]) == 7
    assert paged == answer["items"]
    assert library.librarian.ok("GET", path, params={"since": "1h"})["items"] == answer["items"]

    for missing in (f"/reservations/{uuid.uuid4()}/events", "/reservations/not-an-id/events",
                    f"{path}?since=2099-01-01T00:00:00Z"):
        refused = library.librarian.get(missing)
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found", missing
    bad = library.librarian.get(path, params={"since": "yesterday"})
    assert bad.status_code == 400 and "since" in bad.json()["error"]["details"]


def test_replay_rebuilds_both_read_models_from_the_log_while_reservations_go_on(system, library, history):
    """MyPage and the notices are rebuilt at the same time (each service
    stopped for its switch) while customers keep reserving."""
    customers, ids = history
    before, mailed = pages(customers), mails(system)

    # Reservations keep coming during the replay, from customers of their own.
    email = "busy@example.org"
    busy = [sign_up(library, email) for _ in range(3)]
    book = library.new_book(copies=500, title="Busy")
    made, stop = {}, threading.Event()

    def traffic():
        turn = 0
        while not stop.is_set():
            customer = busy[turn % len(busy)]
            turn += 1
            response = customer.post("/reservations", json={"book_id": book["id"]})
            if response.status_code == 202:  # (a lending limit may say 409: not a reservation)
                made[response.json()["id"]] = customer
            time.sleep(0.5)

    summaries = {}

    def rebuild(service):
        summaries[service] = replay.replay(system, service, say=lambda line: None)

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        time.sleep(1)
        replays = [threading.Thread(target=rebuild, args=(service,)) for service in ("mypage", "notification")]
        for thread in replays:
            thread.start()
        for thread in replays:
            thread.join()
        time.sleep(1)
    finally:
        stop.set()
        worker.join()
    assert sorted(summaries) == ["mypage", "notification"], "a replay failed: see above"
    for service, summary in summaries.items():
        assert summary.applied > 0 and summary.invalid == 0
        assert os.path.exists(os.path.join(system.state_dir, "data", f"{service}.db.before-replay"))
    assert made, "no reservation was taken during the replay"

    assert pages(customers) == before  # no row lost, none doubled, nothing new
    for reservation_id in made:  # and what came during the replay is there, once
        library.wait_status(reservation_id, "confirmed", timeout=30)

    def each_once():
        for customer in busy:
            mine = sorted(rid for rid, owner in made.items() if owner is customer)
            rows = customer.ok("GET", "/mypage")["reservations"]
            assert sorted(row["reservation_id"] for row in rows) == mine
            assert {row["status"] for row in rows} <= {"confirmed"}
            items = customer.ok("GET", "/notifications", params={"limit": 500})["items"]
            assert sorted(n["reservation_id"] for n in items) == mine
        return True

    eventually(each_once, timeout=30, message="every reservation taken during the replay, once")
    time.sleep(2)  # a mail sent again would be here by now
    assert mails(system, but=email) == mailed  # no notice mailed again


def test_a_service_that_is_no_read_model_is_not_replayed(system):
    with pytest.raises(replay.Refused, match="not a read model"):
        replay.replay(system, "product")
