"""The synchronous cancel is whole or absent (SPEC §1.5, issue #13), on real
processes and the real broker.

Each window of the cancel is opened on purpose, at one exact step, by the
fault points of common/faults.py: this module's system runs with them armed
on ``gate``, so a test steers one step of one request (crash, stall, hold)
by writing a file, without restarting anything. After each, with no request
from anyone (the test only starts again what died, as the supervisor
would), delivery and reservation agree within seconds: both canceled, the
copy back in stock exactly once, MyPage ``canceled`` / ``canceled``; or
neither changed. The stock invariant of SPEC §3 holds (``settle``: the audit).

Then the chaos check: 100 confirmed reservations canceled at once while
reservation and delivery are killed (-9) and started again at random.
The broker restarted between the two steps is in test_cancel_broker.py (it
needs a broker of its own).
"""
import collections
import concurrent.futures
import json
import os
import random
import threading
import time
from datetime import datetime

import pytest
from kombu import Connection
from sqlalchemy import create_engine, text

from bench.audit import cancels_in_flight, stored_reservations
from cancels import (
    CANCEL_TIMEOUT, RPC_TIMEOUT, cancel_in_background, canceled_everywhere, confirmed_reservation,
    delivery_status, gated_system, stored_status, unchanged_everywhere,
)
from chaos import handler_queue, new_customer, settle
from common import faults
from helpers import Library, eventually, rpc

pytestmark = pytest.mark.e2e

DELIVERY_CANCELED_QUEUE = handler_queue("delivery", "delivery_canceled", "reservation", "on_delivery_canceled")


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """The five services, the cancel's fault points on ``gate``."""
    with gated_system(tmp_path_factory.mktemp("system"), {
        # The chaos check: 5 customers signed up at once, 20 live reservations each.
        "RATE_LIMIT_ENABLED": "false",
        "MAX_ACTIVE_RESERVATIONS": "0",
    }) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def library(system):
    return Library(system.gateway_url)


# -- each window, opened on purpose ----------------------------------------------------

def test_reservation_killed_after_delivery_canceled_and_before_its_own_commit(system, library):
    customer, book, rid = confirmed_reservation(library)
    # delivery publishes delivery_canceled before it answers, and reservation
    # usually applies it at once; held here, the window stays open until the crash.
    held = faults.arm(system.gates, "reservation.delivery-canceled.before-apply", "hold")
    faults.arm(system.gates, "reservation.cancel.after-delivery", "crash")

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = cancel_in_background(pool, customer, rid)
        eventually(lambda: not system.pids("reservation"), message="reservation died between the steps")
        os.unlink(held)
        # The window, open: delivery canceled, the reservation not, its intent recorded.
        assert delivery_status(system, rid) == "canceled"
        assert stored_status(system, book, rid) == "confirmed"
        assert rid in cancels_in_flight(system)
        # Take delivery_canceled away too: the recovery must do without it.
        with Connection(system.amqp_uri) as connection:
            connection.default_channel.queue_purge(DELIVERY_CANCELED_QUEUE)
        started = log_size(system, "reservation")
        system.start("reservation")  # what the supervisor does; no one asks anything
        response = answer.result()
    # 503 when the gateway gave up first; 200 when the request, redelivered
    # to the new process within its deadline, finished the job.
    assert response.status_code in (200, 503), response.text
    canceled_everywhere(system, library, customer, book, rid)
    if response.status_code == 503:
        finished = [line.get("completed_by") for line in log_lines(system, "reservation", started)
                    if line.get("reservation_id") == rid and line.get("completed_by")]
        assert finished == ["recovery"]


def test_delivery_answering_after_the_callers_deadline(system, library):
    customer, book, rid = confirmed_reservation(library)
    faults.arm(system.gates, "delivery.cancel.before-reply", f"sleep={CANCEL_TIMEOUT + 1.5}")

    response = customer.post(f"/reservations/{rid}/cancel", timeout=30)

    # delivery_canceled, published before the late answer, usually reaches
    # reservation while the request still waits: then the customer hears
    # 200. If not, 503 (while the delivery is canceled) ...
    assert response.status_code in (200, 503), response.text
    if response.status_code == 503:
        assert int(response.headers["Retry-After"]) > 0
    # ... and either way the system finishes the cancel by itself.
    canceled_everywhere(system, library, customer, book, rid)


def test_delivery_killed_after_canceling_and_before_answering(system, library):
    # Killed right after its commit: before it answers, and even before it
    # publishes delivery_canceled (common/store.py's crash-before-publish);
    # reservation can learn nothing until delivery is back. (Killed after
    # publishing: the chaos check below aims a kill there.)
    customer, book, rid = confirmed_reservation(library)
    system.kill("delivery")
    armed = system.env["BOOKRENTAL_FAULT"]
    system.env["BOOKRENTAL_FAULT"] = "crash-before-publish"  # its first write that emits: this cancel
    try:
        system.start("delivery")
    finally:
        system.env["BOOKRENTAL_FAULT"] = armed

    response = customer.post(f"/reservations/{rid}/cancel", timeout=30)

    assert response.status_code == 503, response.text
    eventually(lambda: not system.pids("delivery"), message="delivery died after its commit")
    # The window, open: the recovery cannot reach delivery and keeps the intent.
    assert stored_status(system, book, rid) == "confirmed"
    assert rid in cancels_in_flight(system)
    system.start("delivery")
    canceled_everywhere(system, library, customer, book, rid)


def test_a_cancel_that_never_reached_delivery_changes_nothing(system, library):
    # reservation records its intent, then stalls past the gateway's
    # deadline: delivery is never asked (nothing may be done for a caller
    # who has been told 503). The recovery drops the intent.
    customer, book, rid = confirmed_reservation(library)
    faults.arm(system.gates, "reservation.cancel.before-delivery", f"sleep={RPC_TIMEOUT + 0.5}")

    response = customer.post(f"/reservations/{rid}/cancel", timeout=30)

    assert response.status_code == 503, response.text
    unchanged_everywhere(system, library, customer, book, rid)
    # and the customer's retry does the job
    assert customer.ok("POST", f"/reservations/{rid}/cancel")["status"] == "canceled"
    canceled_everywhere(system, library, customer, book, rid)


# -- chaos ---------------------------------------------------------------------------------

# Where each service's window is: the fault point it passes through, widened.
WINDOW = {"reservation": "reservation.cancel.after-delivery", "delivery": "delivery.cancel.before-reply"}


class Killer(threading.Thread):
    """kill -9 each of ``victims`` in turn, in a random order, after a random
    pause, and start it again (through ops.run.Cluster's kill and start, as
    the supervisor would). An ``aimed`` kill waits, after its pause, for the
    victim to log that a cancel has just entered its (widened) window; the
    others strike at whatever moment the pause ends."""

    def __init__(self, system, victims, seed):
        super().__init__(daemon=True)
        self.system = system
        self.random = random.Random(seed)
        self.victims = list(victims)
        self.random.shuffle(self.victims)
        self.halt = threading.Event()
        self.kills = []  # (time, service, aimed)
        self.error = None

    def run(self):
        try:
            for victim, aimed in self.victims:
                if self.halt.wait(self.random.uniform(0.5, 2.5)):
                    return
                if aimed:
                    self._wait_for_window(victim)
                self.kills.append((time.time(), victim, aimed))
                self.system.kill(victim)
                time.sleep(self.random.uniform(0.0, 1.0))
                self.system.start(victim)
        except Exception as error:  # reported by the test
            self.error = error

    def _wait_for_window(self, victim, timeout=10):
        mark = f"fault point {WINDOW[victim]}"
        with open(self.system.logfile(victim)) as log:
            log.seek(0, 2)
            deadline = time.time() + timeout
            while time.time() < deadline and not self.halt.is_set():
                if mark in log.read():
                    return
                time.sleep(0.02)

    def stop(self):
        self.halt.set()
        self.join(120)


def log_lines(system, service, since):
    """The JSON log lines of ``service`` (every life of it) written after byte ``since``."""
    with open(system.logfile(service)) as handle:
        handle.seek(since)
        for line in handle:
            try:
                yield json.loads(line)
            except ValueError:
                continue


def log_size(system, service):
    with open(system.logfile(service)) as handle:
        return handle.seek(0, 2)


def _at(line):
    return datetime.fromisoformat(line["at"]).timestamp()


def windows_hit(system, rids, since, kills):
    """How often each window of the cancel was hit, from the services' logs.

    One cancel attempt is one request (one correlation id): reservation logs
    ``cancel intent recorded`` then, unless it dies, an outcome (``reservation
    canceled`` / ``already canceled``; ``cancel left to recovery`` when
    delivery did not answer; ``reservation canceled: delivery's answer
    lost...`` when delivery_canceled came first); delivery logs ``delivery canceled`` under the
    same correlation id when it canceled for that request."""
    rids = set(rids)
    attempts = collections.defaultdict(dict)  # (rid, correlation id) -> what happened
    completed_by = collections.Counter()
    dropped = 0
    for line in log_lines(system, "reservation", since["reservation"]):
        rid = line.get("reservation_id")
        if rid not in rids:
            continue
        attempt = attempts[(rid, line.get("correlation_id"))]
        msg = line["msg"]
        if msg == "cancel intent recorded":
            attempt.setdefault("asked", _at(line))
        elif msg.startswith("cancel left to recovery"):
            attempt["outcome"] = ("no answer", _at(line))
        elif msg in ("reservation canceled", "reservation already canceled"):
            attempt["outcome"] = ("answered", _at(line))
        elif msg.startswith("reservation canceled: delivery's answer lost"):
            attempt["outcome"] = ("answered, the answer lost", _at(line))
        elif msg == "cancel intent dropped: delivery did not cancel":
            dropped += 1
        if line.get("completed_by"):
            how = line["completed_by"]
            if how == "delivery_canceled":
                how += " (its request still waiting)" if line.get("in_flight") else " (its request gone)"
            completed_by[how] += 1
    for line in log_lines(system, "delivery", since["delivery"]):
        if line["msg"] == "delivery canceled" and line.get("reservation_id") in rids:
            key = (line["reservation_id"], line.get("correlation_id"))
            if key in attempts:
                attempts[key]["delivery_canceled"] = _at(line)

    delivery_kills = [at for at, service, _ in kills if service == "delivery"]
    hits = collections.Counter()
    for attempt in attempts.values():
        if "asked" not in attempt:
            continue  # a line about a cancel finished by a handler or the recovery
        canceled_at, outcome = attempt.get("delivery_canceled"), attempt.get("outcome")
        if outcome is None:
            hits["reservation died between delivery's cancel and its own commit" if canceled_at
                 else "reservation died before delivery canceled (nothing changed)"] += 1
        elif outcome[0] != "answered" and canceled_at:
            killed = any(canceled_at <= at <= outcome[1] for at in delivery_kills)
            told = "503" if outcome[0] == "no answer" else "200, delivery_canceled came first"
            hits[f"delivery's answer lost ({'delivery killed after canceling' if killed else 'late'}); "
                 f"customer told {told}"] += 1
        elif outcome[0] == "no answer":
            hits["delivery never canceled: 503, nothing changed"] += 1
    return {
        "windows hit (cancel attempts)": dict(hits),
        "attempts": sum(1 for attempt in attempts.values() if "asked" in attempt),
        "cancels finished by": dict(completed_by),
        "intents dropped by the recovery": dropped,
        "kills": dict(collections.Counter(f"{service}{' (aimed)' if aimed else ''}"
                                          for _, service, aimed in kills)),
    }


def reservation_canceled_counts(system):
    """{reservation id: reservation_canceled events in reservation's outbox}."""
    engine = create_engine(system._process_env()["RESERVATION_DB_URI"])
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT payload FROM outbox WHERE event_type = 'reservation_canceled'"))
            return collections.Counter(json.loads(payload)["reservation_id"] for (payload,) in rows)
    finally:
        engine.dispose()


def test_chaos_100_cancels_while_reservation_and_delivery_are_killed(system, library, tmp_path):
    began = time.monotonic()
    customers = [new_customer(library) for _ in range(5)]
    books = [library.new_book(copies=5) for _ in range(20)]
    book_ids = [book["id"] for book in books]
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        made = pool.map(lambda pair: (library.reserve(*pair)["id"], pair[0]),
                        [(customer, book["id"]) for customer in customers for book in books])
        owner = dict(made)
    eventually(lambda: sorted(row["status"] for row in stored_reservations(system, book_ids).values())
               == ["confirmed"] * 100, timeout=60, message="100 reservations confirmed")
    prepared = time.monotonic()

    # Widen the windows, so that random kills land in them: 0.3 s between
    # delivery's answer and reservation's commit, 0.3 s between delivery's
    # commit and its answer.
    widened = [faults.arm(system.gates, point, "each sleep=0.3")
               for point in ("reservation.cancel.after-delivery", "delivery.cancel.before-reply")]
    since = {service: log_size(system, service) for service in ("reservation", "delivery")}
    answers = collections.defaultdict(list)  # rid -> the status of every attempt (None: no answer)
    lock = threading.Lock()

    def cancel(rid, delay):
        time.sleep(delay)
        for attempt in range(6):  # a careful client retries a 503, as Retry-After says
            try:
                status = owner[rid].post(f"/reservations/{rid}/cancel", timeout=30).status_code
            except Exception:
                status = None
            with lock:
                answers[rid].append(status)
            if status not in (None, 502, 503, 504):
                return
            time.sleep(1.0 + random.random())

    killer = Killer(system, [("reservation", True), ("delivery", True),
                             (random.Random(5).choice(["reservation", "delivery"]), False)], seed=13)
    killer.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(25) as pool:
            spread = random.Random(7)
            for future in [pool.submit(cancel, rid, spread.uniform(0, 15)) for rid in owner]:
                future.result(timeout=240)
    finally:
        killer.stop()
        for path in widened:
            os.unlink(path)
        for service in ("reservation", "delivery"):
            system.start(service)
    assert killer.error is None, killer.error
    burst = time.monotonic()

    settle(system, library, book_ids, list(owner), {c.username: c for c in customers}, timeout=90)
    final = {rid: row["status"] for rid, row in stored_reservations(system, book_ids).items()}
    with rpc(system.amqp_uri) as services:
        deliveries = services.delivery.statuses(list(owner))
    announced = reservation_canceled_counts(system)
    for rid, tries in answers.items():
        assert set(tries) <= {200, 503, None}, (rid, tries)
        if 200 in tries:  # no cancel answered 200 was lost
            assert (final[rid], deliveries[rid]) == ("canceled", "canceled"), (rid, tries)
    for rid, status in final.items():  # every pair agrees (and the audit agreed)
        assert (status, deliveries[rid]) in {("canceled", "canceled"), ("confirmed", "preparing")}, rid
        assert announced[rid] == (1 if status == "canceled" else 0), rid  # product: one, so one copy back

    stats = windows_hit(system, owner, since, killer.kills)
    stats["answers"] = dict(collections.Counter(str(s) for tries in answers.values() for s in tries))
    stats["canceled in the end"] = sum(1 for status in final.values() if status == "canceled")
    stats["told 503 at every try, canceled in the end"] = sum(
        1 for rid, tries in answers.items() if 200 not in tries and final[rid] == "canceled")
    stats["seconds"] = {"prepare": round(prepared - began), "burst": round(burst - prepared),
                        "settle": round(time.monotonic() - burst)}
    print("chaos cancel windows:", json.dumps(stats, indent=2))
    (tmp_path / "chaos-windows.json").write_text(json.dumps(stats, indent=2))
    assert len(killer.kills) == 3, stats["kills"]
