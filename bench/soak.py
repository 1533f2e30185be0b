"""``make soak MINUTES=n``: load through the gateway while backends are killed.

For ``--minutes`` minutes, customers reserve, cancel and return books, a
courier ships and delivers, a librarian restocks, all through the HTTP API,
while a chaos thread kills a random backend service with SIGKILL every few
seconds, and the supervisor starts it again (ops/supervision.py). Then the load stops, every
service is started, the system is given time to settle, and the audit
(bench/audit.py) looks for anything lost or done twice.

It starts a system of its own (ops.run.Cluster) on a vhost, databases and a
port of its own, so it runs beside ``make up`` and beside the tests; rate
limits are off (this is a load, not an abuse). The report says how many
requests were sent, which failed and how, how many reservations were lost,
how many got two deliveries, and whether the stock invariant holds for every
title. Exit status 0 when the audit finds nothing wrong, 1 otherwise.
"""
import argparse
import collections
import os
import random
import sys
import tempfile
import threading
import time
import uuid

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT]

from bench.audit import audit, stored_reservations  # noqa: E402
from bench.harness import LENDING_LIMITS_OFF, Client, Library, free_port, throwaway_vhost  # noqa: E402
from common.config import BACKENDS  # noqa: E402
from ops.run import Cluster  # noqa: E402

TITLES = 8
COPIES = 4  # few copies a title, so waitlists form and move
CUSTOMERS = 60  # MyPage shows 500 reservations at most; keep each customer well under
RESERVE_RETRIES = 3


class Stats:
    """Every request's outcome, counted, from every worker thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.outcomes = collections.Counter()  # (action, status) -> n
        self.accepted = set()  # reservation ids answered 202
        self.canceled = set()  # answered 200 to a cancel
        self.returned = set()  # answered 200 to a return
        self.kills = collections.Counter()

    def count(self, action, status):
        with self.lock:
            self.outcomes[(action, status)] += 1

    def total(self):
        return sum(self.outcomes.values())

    def by_status(self):
        statuses = collections.Counter()
        for (_, status), n in self.outcomes.items():
            statuses[status] += n
        return statuses


def call(stats, action, client, method, path, **kwargs):
    try:
        response = client.request(method, path, timeout=20, **kwargs)
        status = response.status_code
    except requests.RequestException:
        response, status = None, "no answer"
    stats.count(action, status)
    return response, status


class Worker(threading.Thread):
    """One person at a keyboard: a customer most of the time, sometimes the
    courier or the librarian."""

    def __init__(self, library, customers, books, stats, until, seed):
        super().__init__(daemon=True)
        self.library = library
        self.customers = customers
        self.books = books
        self.stats = stats
        self.until = until
        self.random = random.Random(seed)
        self.courier = Client.signed_in(library.url, "courier")
        self.librarian = Client.signed_in(library.url, "librarian")
        self.mine = collections.defaultdict(list)  # username -> reservation ids

    def run(self):
        actions = [(self.reserve, 45), (self.cancel, 12), (self.ship_or_deliver, 25), (self.give_back, 10),
                   (self.restock, 3), (self.look, 5)]
        steps, weights = zip(*actions)
        while time.time() < self.until:
            self.random.choices(steps, weights)[0]()
            time.sleep(self.random.uniform(0.02, 0.1))

    def reserve(self):
        customer = self.random.choice(self.customers)
        # A retry is the same request again: same key, same body.
        key, book_id = str(uuid.uuid4()), self.random.choice(self.books)
        for attempt in range(RESERVE_RETRIES + 1):
            response, status = call(self.stats, "reserve", customer, "POST", "/reservations",
                                    json={"book_id": book_id}, headers={"Idempotency-Key": key})
            if status == 202:
                rid = response.json()["id"]
                with self.stats.lock:
                    self.stats.accepted.add(rid)
                self.mine[customer.username].append(rid)
                return
            if status not in (503, "no answer"):
                return
            time.sleep(0.5 * (attempt + 1))

    def cancel(self):
        customer = self.random.choice(self.customers)
        if self.mine[customer.username]:
            rid = self.random.choice(self.mine[customer.username][-20:])
            _, status = call(self.stats, "cancel", customer, "POST", f"/reservations/{rid}/cancel")
            if status == 200:
                with self.stats.lock:
                    self.stats.canceled.add(rid)

    def ship_or_deliver(self):
        state, step = self.random.choice([("preparing", "ship"), ("shipped", "deliver")])
        response, status = call(self.stats, "deliveries", self.courier, "GET", "/deliveries",
                                params={"status": state, "limit": 20})
        if status == 200 and response.json()["items"]:
            delivery = self.random.choice(response.json()["items"])
            call(self.stats, step, self.courier, "POST", f"/deliveries/{delivery['id']}/{step}")

    def give_back(self):
        customer = self.random.choice(self.customers)
        if self.mine[customer.username]:
            rid = self.random.choice(self.mine[customer.username][-30:])
            _, status = call(self.stats, "return", customer, "POST", f"/reservations/{rid}/return")
            if status == 200:
                with self.stats.lock:
                    self.stats.returned.add(rid)

    def restock(self):
        book_id = self.random.choice(self.books)
        call(self.stats, "restock", self.librarian, "POST", f"/books/{book_id}/stock",
             json={"quantity": self.random.randint(1, 2)})

    def look(self):
        call(self.stats, "mypage", self.random.choice(self.customers), "GET", "/mypage")


def chaos(cluster, stats, until, rng, log):
    """Kill -9 a random backend now and then; the supervisor starts it again."""
    while True:
        time.sleep(rng.uniform(8, 20))
        if time.time() >= until:
            return
        victim = rng.choice(BACKENDS)
        old = cluster.kill(victim)
        stats.kills[victim] += 1
        killed = time.time()
        try:
            cluster.wait_healed(victim, old, timeout=60)
            log(f"killed {victim} (-9); the supervisor had it consuming again {time.time() - killed:.1f}s later")
        except Exception as error:  # reported, and started again at the end
            log(f"killed {victim} (-9); it did not come back: {error}")


def settle(cluster, library, books, stats, customers, timeout):
    """Wait until the audit is clean or ``timeout`` passes; the last findings."""
    deadline = time.time() + timeout
    while True:
        problems = audit(cluster, library, books, stats.accepted, customers)
        if not problems or time.time() > deadline:
            return problems
        time.sleep(2)


def acknowledged_but_undone(cluster, books, stats):
    """Cancels and returns that were answered 200 must have happened."""
    stored = stored_reservations(cluster, books)
    missing = [rid for rid in stats.canceled if stored.get(rid, {}).get("status") != "canceled"]
    missing += [rid for rid in stats.returned if stored.get(rid, {}).get("status") != "returned"]
    return missing


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--settle", type=float, default=180, help="seconds to wait for the system to settle")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(10 ** 6)
    rng = random.Random(seed)
    started = time.time()

    def log(message):
        print(f"[{time.time() - started:7.1f}s] {message}", flush=True)

    with throwaway_vhost("bookrental-soak") as amqp_uri:
        state = tempfile.mkdtemp(prefix="bookrental-soak-")
        cluster = Cluster(state_dir=state, env={
            "AMQP_URI": amqp_uri, "GATEWAY_ADDRESS": f"127.0.0.1:{free_port()}",
            "RATE_LIMIT_ENABLED": "false", "LOG_LEVEL": "WARNING",
            # its customers reserve the same titles over and over: no lending limits (SPEC §8)
            **LENDING_LIMITS_OFF})
        cluster.amqp_uri = amqp_uri
        try:
            cluster.up(timeout=120)
            log(f"system up at {cluster.gateway_url} (vhost {amqp_uri.rsplit('/', 1)[1]}, state {state}, "
                f"seed {seed})")
            library = Library(cluster.gateway_url)
            books = [library.new_book(copies=COPIES, title=f"Soak {n}")["id"] for n in range(TITLES)]
            customers = []
            for n in range(CUSTOMERS):
                username = f"soak-{n}-{uuid.uuid4().hex[:6]}"
                library.anonymous.ok("POST", "/auth/register", 201,
                                     json={"username": username, "password": "soak-password"})
                customer = Client.signed_in(cluster.gateway_url, username, "soak-password")
                customer.username = username
                customers.append(customer)

            stats = Stats()
            until = time.time() + args.minutes * 60
            share = len(customers) // args.workers
            workers = [Worker(library, customers[i * share:(i + 1) * share], books, stats, until, rng.random())
                       for i in range(args.workers)]
            for worker in workers:
                worker.start()
            monkey = threading.Thread(target=chaos, args=(cluster, stats, until, random.Random(rng.random()), log),
                                      daemon=True)
            monkey.start()
            log(f"load for {args.minutes:g} min: {args.workers} workers, {len(customers)} customers, "
                f"{TITLES} titles of {COPIES} copies")
            while time.time() < until:
                time.sleep(min(30, max(0.1, until - time.time())))
                log(f"{stats.total()} requests, {len(stats.accepted)} reservations accepted, "
                    f"kills {dict(stats.kills)}")
            for worker in workers:
                worker.join()
            monkey.join()

            log("load stopped; starting whatever is down and letting the system settle")
            for service in BACKENDS:
                cluster.start(service, timeout=60)
            problems = settle(cluster, library, books, stats, {c.username: c for c in customers}, args.settle)
            undone = acknowledged_but_undone(cluster, books, stats)
            report(stats, problems, undone, books, library, args, seed, time.time() - started)
            return 0 if not problems and not undone else 1
        finally:
            cluster.down()


def report(stats, problems, undone, books, library, args, seed, elapsed):
    kinds = collections.Counter(problem.kind for problem in problems)
    statuses = stats.by_status()
    failed = {status: n for status, n in statuses.items() if status == "no answer" or status >= 500}
    refused = {status: n for status, n in statuses.items() if status != "no answer" and 400 <= status < 500}
    invariant_titles = {int(p.split()[1].rstrip(":")) for p in problems if p.kind == "invariant"}
    lines = [
        "",
        f"Book Rental soak: {args.minutes:g} min of load, {args.workers} workers, seed {seed}, "
        f"{elapsed / 60:.1f} min in all",
        f"  services killed (-9)      {sum(stats.kills.values())}: {dict(sorted(stats.kills.items()))}",
        f"  requests sent             {stats.total()}",
        f"  by status                 {dict(sorted(statuses.items(), key=str))}",
        f"  failed (5xx, no answer)   {dict(sorted(failed.items(), key=str)) or 0}",
        f"  refused (4xx, by the rules: not allowed in this state) {dict(sorted(refused.items(), key=str)) or 0}",
        "  per action                " + ", ".join(
            f"{action} {status}: {n}" for (action, status), n in sorted(stats.outcomes.items(), key=str)),
        f"  reservations accepted     {len(stats.accepted)}",
        f"  reservations lost         {kinds['lost']}",
        f"  reservations unsettled    {kinds['unsettled']}",
        f"  acknowledged cancels/returns not done  {len(undone)}",
        f"  duplicate deliveries      {kinds['duplicate']}",
        f"  MyPage disagreements      {kinds['mypage']}",
        f"  delivery disagreements    {kinds['delivery']}",
        f"  stock invariant           {'holds for all ' + str(len(books)) + ' titles' if not invariant_titles else 'VIOLATED for titles ' + str(sorted(invariant_titles))}",  # noqa: E501
        f"  verdict                   {'nothing lost, nothing twice' if not problems and not undone else 'PROBLEMS'}",
    ]
    for problem in problems[:20]:
        lines.append(f"    - {problem}")
    for rid in undone[:20]:
        lines.append(f"    - acknowledged cancel/return not done: {rid}")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
