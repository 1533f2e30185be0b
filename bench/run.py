"""``make bench``: Book Rental against bare Nameko, measured in the same run.

Starts its own system (five services as processes, ``ops.run.Cluster``) and
its own baseline services (``bench.baseline_service``) on a throwaway vhost
of the local broker, with their own state directory and ports, then:

1. baselines: ``POST /rpc`` (an HTTP route making one RPC call to an echo
   service: the floor) and ``GET /norpc`` (a route with no RPC), closed loop;
2. ``POST /reservations`` through the gateway with bearer tokens, closed
   loop at CONCURRENCY for DURATION: requests/s, p50, p99. The same phase
   offers more than the back end can process, so it also gives the
   end-to-end rate (reservations confirmed, with a delivery and on MyPage)
   and which queues grow;
3. the highest sustained rate: open loop at a fraction of that end-to-end
   rate, lowered until nothing keeps growing;
4. MyPage freshness (confirm, ship, deliver, cancel), at half that rate;
5. ``GET /mypage`` for a customer with 100 reservations, closed loop;
6. the baselines again: their mean is what the ratios use, and the spread
   between the two runs says how noisy the machine was.

Every load runs in a separate process (``bench.loadgen``, asyncio), which
reports its own CPU time. Knobs (environment): DURATION (s, default 20),
CONCURRENCY (32), REPLICAS (1: replicas of each back-end service),
MAX_WORKERS (config.yml: Nameko's worker pool *and* prefetch per consumer),
BENCH_JSON (where to write the raw numbers; default var/bench/latest.json).
``python -m bench.run --sweep`` repeats the end-to-end phase over replicas
and pool sizes.
"""
import argparse
import contextlib
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import shutil

import requests

from bench.harness import LENDING_LIMITS_OFF, MANAGEMENT, free_port, isbn13, throwaway_vhost
from common.config import BACKENDS, SERVICES
from ops.run import Cluster, _http_ok

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
CUSTOMERS = 32
BOOKS = 8
STOCK = 100_000
PAGE_ROWS = 100


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- processes -----------------------------------------------------------------

def cpu_seconds(pids):
    """User + system CPU time of these processes so far."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def measured(spec, pids):
    """A load, and the CPU its target processes spent per answered request
    (a figure the other loads on a shared machine hardly move)."""
    before = cpu_seconds(pids)
    result = loadgen(spec)
    answered = sum(result["statuses"].values()) * (1 + float(spec.get("warmup", 1.0)) / result["duration_s"])
    result["cpu_ms_per_request"] = round((cpu_seconds(pids) - before) * 1000 / max(1, answered), 2)
    return result


def loadgen(spec, module="bench.loadgen"):
    """Run one load in a process of its own; its JSON result."""
    out = subprocess.run([PY, "-m", module, json.dumps(spec)], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": ROOT})
    if out.returncode != 0:
        raise RuntimeError(f"{module} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def start_loadgen(spec, module="bench.loadgen"):
    return subprocess.Popen([PY, "-m", module, json.dumps(spec)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": ROOT})


def finish(process):
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"load process failed: {stderr[-2000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


class Baselines:
    """bench_echo and bench_http, each a ``nameko run`` process."""

    def __init__(self, amqp_uri, state_dir):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PYTHONPATH": ROOT, "PYTHONWARNINGS": "ignore", "AMQP_URI": amqp_uri,
                    "GATEWAY_ADDRESS": f"127.0.0.1:{self.port}"}
        self.state_dir = state_dir
        self.processes = []

    def pids(self):
        return [process.pid for process in self.processes]

    def start(self):
        for cls in ("EchoService", "HttpService"):
            log_file = open(os.path.join(self.state_dir, f"baseline-{cls}.log"), "ab")
            self.processes.append(subprocess.Popen(
                [PY, "-m", "nameko", "run", "--config", os.path.join(ROOT, "config.yml"),
                 f"bench.baseline_service:{cls}"],
                cwd=ROOT, env=self.env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if requests.post(self.url + "/rpc", json={"ping": 1}, timeout=2).status_code == 202:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise TimeoutError("the baseline services did not start; see " + self.state_dir)

    def stop(self):
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


# -- observing the system ------------------------------------------------------

class Observer:
    """Samples, once a second: reservations accepted (reservation's database),
    fully processed (MyPage rows confirmed with a delivery being prepared) and
    every queue's depth (management API)."""

    def __init__(self, cluster, vhost, stores=None):
        self.cluster = cluster
        data = os.path.join(cluster.state_dir, "data")
        stores = stores or {}
        # The services' SQLite files, or their PostgreSQL databases (--postgres).
        self.reservation_db = stores.get("RESERVATION_DB_URI") or os.path.join(data, "reservation.db")
        self.mypage_db = stores.get("MYPAGE_DB_URI") or os.path.join(data, "mypage.db")
        self._engines = {}
        self.vhost = vhost
        self.samples = []
        self._stop = threading.Event()
        self._thread = None

    def _count(self, where, sql):
        if "://" in where:
            from sqlalchemy import create_engine, text

            engine = self._engines.get(where) or self._engines.setdefault(where, create_engine(where, pool_size=1))
            with engine.connect() as connection:
                return connection.execute(text(sql)).scalar()
        db = sqlite3.connect(f"file:{where}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute(sql).fetchone()[0]
        finally:
            db.close()

    def accepted(self):
        return self._count(self.reservation_db, "SELECT count(*) FROM reservations WHERE customer LIKE 'bench-%'")

    def processed(self):
        return self._count(self.mypage_db, "SELECT count(*) FROM reservation_views WHERE customer LIKE 'bench-%' "
                                            "AND status = 'confirmed' AND delivery_status = 'preparing'")

    def queue_list(self, columns):
        """The vhost's queues, with these columns, from the management API."""
        response = requests.get(f"{MANAGEMENT}/api/queues/{self.vhost}", params={"columns": columns}, timeout=10)
        response.raise_for_status()
        return response.json()

    def queues(self):
        # A stream (the event log, events.log) keeps what it is sent: it never drains.
        return {q["name"]: q.get("messages") or 0 for q in self.queue_list("name,messages,type")
                if not q["name"].startswith("rpc.reply") and q.get("type") != "stream"}

    def sample(self):
        return {"t": time.time(), "accepted": self.accepted(), "processed": self.processed(),
                "queues": self.queues()}

    def __enter__(self):
        self.samples = []
        self._stop.clear()

        def loop():
            while not self._stop.is_set():
                started = time.time()
                try:
                    self.samples.append(self.sample())
                except Exception as error:  # a missed sample is not fatal
                    log(f"sample failed: {error}")
                self._stop.wait(max(0.0, 1.0 - (time.time() - started)))

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def drain(self, timeout=300):
        """Wait until every accepted reservation is processed and the queues are empty."""
        started = time.time()
        while time.time() - started < timeout:
            gone = [name for name in SERVICES if not self.cluster.pids(name)]
            if gone:  # e.g. the shared broker was restarted under it
                raise RuntimeError(f"{', '.join(gone)} exited during the benchmark; see {self.cluster.state_dir}/log")
            try:
                sample = self.sample()
            except Exception as error:  # the management API can blink on a shared broker
                log(f"sample failed: {error}")
                time.sleep(1)
                continue
            if sample["accepted"] == sample["processed"] and not any(sample["queues"].values()):
                return time.time() - started
            time.sleep(0.5)
        log("the system did not drain in time")
        return None


def slope(points):
    """Least-squares slope of [(t, y)]: units of y per second."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (y - my) for t, y in points) / den if den else 0.0


def window(samples, start, end):
    """The samples between start and end (epoch seconds)."""
    return [s for s in samples if start <= s["t"] <= end]


def analyse(samples, start, end):
    """Processed rate, accepted rate and backlog growth over [start, end],
    leaving out the first quarter (the pipeline filling up)."""
    begin = start + (end - start) / 4
    kept = window(samples, begin, end + 0.5)
    processed = slope([(s["t"], s["processed"]) for s in kept])
    accepted = slope([(s["t"], s["accepted"]) for s in kept])
    lag = slope([(s["t"], s["accepted"] - s["processed"]) for s in kept])
    growing = {}
    for name in (kept[-1]["queues"] if kept else {}):
        rate = slope([(s["t"], s["queues"].get(name, 0)) for s in kept])
        if rate > 1.0 and kept[-1]["queues"].get(name, 0) > 20:
            growing[name] = round(rate, 1)
    return {"processed_per_s": round(processed, 1), "accepted_per_s": round(accepted, 1),
            "lag_growth_per_s": round(lag, 1), "growing_queues": growing,
            "final_lag": (kept[-1]["accepted"] - kept[-1]["processed"]) if kept else None}


# -- the system --------------------------------------------------------------

class System:
    def __init__(self, amqp_uri, state_dir, replicas, env=None):
        self.port = free_port()
        # Rate limits stay on (their cost is part of every request) but far
        # above what one load generator on one address sends.
        unlimited = {f"RATE_LIMIT_{k}": "1000000" for k in (
            "ADDRESS_PER_SECOND", "ADDRESS_BURST", "ACCOUNT_PER_SECOND", "ACCOUNT_BURST")}
        # A few load customers reserve the same titles over and over: no lending limits (SPEC §8).
        unlimited.update(LENDING_LIMITS_OFF)
        self.cluster = Cluster(state_dir=state_dir, python=PY, env={
            "AMQP_URI": amqp_uri, "GATEWAY_ADDRESS": f"127.0.0.1:{self.port}", **unlimited, **(env or {})})
        self.replicas = replicas
        self.url = self.cluster.gateway_url

    def up(self):
        self.cluster.up(timeout=90)
        if self.replicas > 1:
            for name in BACKENDS:
                self.cluster.start(name, replicas=self.replicas)

    def down(self):
        self.cluster.down()

    def pids(self, *services):
        return [pid for name in (services or SERVICES) for pid in self.cluster.pids(name).values()]

    def token(self, username, password):
        response = requests.post(self.url + "/auth/token", json={"username": username, "password": password},
                                 timeout=30)
        response.raise_for_status()
        return response.json()["access_token"]

    def customer(self, username):
        password = "Bench-Pass-7f3a9c2e41"
        response = requests.post(self.url + "/auth/register", json={"username": username, "password": password},
                                 timeout=30)
        if response.status_code not in (201, 409):
            raise RuntimeError(f"register {username}: {response.status_code} {response.text}")
        return self.token(username, password)

    def new_book(self, librarian, copies):
        response = requests.post(self.url + "/books", headers={"Authorization": f"Bearer {librarian}"}, json={
            "isbn": isbn13(), "title": f"Bench {time.time()}",
            "author": "Bench", "copies": copies},
            timeout=30)
        response.raise_for_status()
        return response.json()["id"]


# -- the phases ---------------------------------------------------------------

def baseline_phases(baselines, duration, concurrency, page_bytes):
    rpc = measured({"url": baselines.url, "method": "POST", "path": "/rpc", "bodies": [{"book_id": 1}],
                    "concurrency": concurrency, "duration": duration}, baselines.pids())
    norpc = measured({"url": baselines.url, "method": "GET", "path": "/norpc",
                      "concurrency": concurrency, "duration": duration}, baselines.pids())
    sized = measured({"url": baselines.url, "method": "GET", "path": f"/norpc/{page_bytes}",
                      "concurrency": concurrency, "duration": duration}, baselines.pids())
    return rpc, norpc, sized


def warm_up(baselines, system, tokens, books):
    loadgen({"url": baselines.url, "method": "POST", "path": "/rpc", "bodies": [{"book_id": 1}],
             "concurrency": 8, "duration": 2, "warmup": 0})
    loadgen({"url": baselines.url, "method": "GET", "path": "/norpc", "concurrency": 8, "duration": 2,
             "warmup": 0})
    loadgen({"url": system.url, "method": "POST", "path": "/reservations", "tokens": tokens,
             "bodies": [{"book_id": b} for b in books], "concurrency": 8, "duration": 2, "warmup": 0})


def mypage_customer(system, book):
    token = system.customer("bench-page")
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {token}"
        for _ in range(PAGE_ROWS):
            session.post(system.url + "/reservations", json={"book_id": book}, timeout=30).raise_for_status()
    return token


def run_bench(args):
    duration, concurrency, replicas = args.duration, args.concurrency, args.replicas
    results = {"config": {"duration_s": duration, "concurrency": concurrency, "replicas": replicas,
                          "max_workers": int(os.environ.get("MAX_WORKERS", 10))}}
    with throwaway_vhost("bookrental-bench") as amqp_uri:
        vhost = amqp_uri.rsplit("/", 1)[1]
        state_dir = tempfile.mkdtemp(prefix="bookrental-bench-")
        baselines = Baselines(amqp_uri, state_dir)
        system = System(amqp_uri, state_dir, replicas)
        try:
            log(f"starting baselines and the system (state in {state_dir})")
            baselines.start()
            system.up()
            librarian = system.token("librarian", "librarian")
            courier = system.token("courier", "courier")
            books = [system.new_book(librarian, STOCK) for _ in range(BOOKS)]
            tokens = [system.customer(f"bench-{i}") for i in range(CUSTOMERS)]
            probes = [(f"probe-{i}", system.customer(f"probe-{i}")) for i in range(args.probes)]
            observer = Observer(system.cluster, vhost)
            log("warming up")
            warm_up(baselines, system, tokens, books)
            page_token = mypage_customer(system, books[0])
            observer.drain()
            page_bytes = len(requests.get(system.url + "/mypage", headers={"Authorization": f"Bearer {page_token}"},
                                          timeout=30).content)
            results["config"]["page_bytes"] = page_bytes

            log("baselines (1 of 2)")
            rpc1, norpc1, sized1 = baseline_phases(baselines, duration, concurrency, page_bytes)

            log("POST /reservations, closed loop: the front door, and end to end under overload")
            accepted_before, cpu_before = observer.accepted(), cpu_seconds(system.pids())
            per_service_before = {name: cpu_seconds(system.pids(name)) for name in SERVICES}
            with observer:
                start = time.time()
                reserve = measured({"url": system.url, "method": "POST", "path": "/reservations",
                                    "tokens": tokens, "bodies": [{"book_id": b} for b in books],
                                    "concurrency": concurrency, "duration": duration},
                                   system.pids("gateway", "reservation"))
                end = time.time()
            overload = analyse(observer.samples, start, end)
            overload["drain_s"] = observer.drain()
            reservations = max(1, observer.accepted() - accepted_before)
            overload["cpu_ms_per_reservation"] = round(
                (cpu_seconds(system.pids()) - cpu_before) * 1000 / reservations, 2)
            overload["cpu_ms_per_reservation_by_service"] = {
                name: round((cpu_seconds(system.pids(name)) - before) * 1000 / reservations, 2)
                for name, before in per_service_before.items()}
            results["reserve"], results["overload"] = reserve, overload
            log(f"  accepted {reserve['rps']:.0f}/s, processed {overload['processed_per_s']}/s")

            capacity = max(1.0, overload["processed_per_s"])
            sustained, attempts = None, []
            fraction = args.sustain_fraction
            for _ in range(args.sustain_tries):
                rate = round(capacity * fraction, 1)
                log(f"sustained load: open loop at {rate}/s")
                accepted_before, cpu_before = observer.accepted(), cpu_seconds(system.pids())
                with observer:
                    start = time.time()
                    offered = loadgen({"url": system.url, "method": "POST", "path": "/reservations",
                                       "tokens": tokens, "bodies": [{"book_id": b} for b in books],
                                       "concurrency": concurrency, "duration": duration, "rate": rate})
                    end = time.time()
                outcome = analyse(observer.samples, start, end)
                outcome.update({"offered_per_s": rate, "answered_per_s": round(offered["rps"], 1),
                                "p99_ms": offered["p99_ms"], "drain_s": observer.drain()})
                # CPU per reservation at a rate the system keeps up with: less
                # inflated by contention than under overload.
                outcome["cpu_ms_per_reservation"] = round(
                    (cpu_seconds(system.pids()) - cpu_before) * 1000 / max(1, observer.accepted() - accepted_before), 2)
                attempts.append(outcome)
                keeps_up = (not outcome["growing_queues"] and outcome["lag_growth_per_s"] < 0.03 * rate
                            and offered["statuses"].get("202", 0) >= 0.97 * rate * duration)
                log(f"  processed {outcome['processed_per_s']}/s, lag growth {outcome['lag_growth_per_s']}/s, "
                    f"growing: {outcome['growing_queues'] or 'none'}")
                if keeps_up:
                    sustained = outcome
                    break
                fraction *= 0.8
            results["sustain_attempts"] = attempts
            results["sustained"] = sustained
            sustained_rate = sustained["offered_per_s"] if sustained else attempts[-1]["processed_per_s"]

            half = round(sustained_rate / 2, 1)
            log(f"MyPage freshness at {half}/s")
            background = start_loadgen({"url": system.url, "method": "POST", "path": "/reservations",
                                        "tokens": tokens, "bodies": [{"book_id": b} for b in books],
                                        "concurrency": concurrency, "duration": duration, "rate": half})
            time.sleep(1)
            fresh = loadgen({"url": system.url, "customers": probes, "courier": courier, "book_id": books[1],
                             "delivery_db": os.path.join(state_dir, "data", "delivery.db"),
                             "duration": max(5, duration - 2)}, module="bench.freshness")
            results["freshness"] = fresh
            results["freshness_background"] = finish(background)
            observer.drain()

            log("GET /mypage, 100 reservations")
            results["mypage"] = measured({"url": system.url, "method": "GET", "path": "/mypage",
                                          "tokens": [page_token], "concurrency": concurrency,
                                          "duration": duration}, system.pids("gateway", "mypage"))

            log("baselines (2 of 2)")
            rpc2, norpc2, sized2 = baseline_phases(baselines, duration, concurrency, page_bytes)
            results["baseline_rpc"] = [rpc1, rpc2]
            results["baseline_norpc"] = [norpc1, norpc2]
            results["baseline_norpc_sized"] = [sized1, sized2]
        finally:
            log("stopping")
            system.down()
            baselines.stop()
            if not args.keep:
                shutil.rmtree(state_dir, ignore_errors=True)
    return results


# -- the table ----------------------------------------------------------------

def mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def table(results):
    rpc = {k: mean([r.get(k) for r in results["baseline_rpc"]])
           for k in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_request")}
    norpc = {k: mean([r.get(k) for r in results["baseline_norpc"]])
             for k in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_request")}
    sized = {k: mean([r.get(k) for r in results["baseline_norpc_sized"]])
             for k in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_request")}
    spread_sized = _spread([r["rps"] for r in results["baseline_norpc_sized"]])
    spread_rpc = _spread([r["rps"] for r in results["baseline_rpc"]])
    spread_norpc = _spread([r["rps"] for r in results["baseline_norpc"]])
    c = results["config"]
    rows = []

    def row(name, value, unit, base, base_name, target="", cpu=""):
        ratio = f"{value / base:.0%}" if value is not None and base else "-"
        rows.append((name, _fmt(value, unit), base_name, _fmt(base, unit), ratio, target, cpu))

    def cpu(value, base):
        if value is None:
            return ""
        return f"{value:.2f}" + (f" ({value / base:.1f}x)" if base else "")

    row("baseline: HTTP route + 1 RPC (floor)", rpc["rps"], "/s", None, f"2 runs, spread {spread_rpc:.0%}",
        cpu=cpu(rpc["cpu_ms_per_request"], None))
    row("  p50 / p99", rpc["p50_ms"], "ms", None, _fmt(rpc["p99_ms"], "ms") + " p99")
    row("baseline: HTTP route, no RPC", norpc["rps"], "/s", None, f"2 runs, spread {spread_norpc:.0%}",
        cpu=cpu(norpc["cpu_ms_per_request"], None))
    row("  p50 / p99", norpc["p50_ms"], "ms", None, _fmt(norpc["p99_ms"], "ms") + " p99")
    row(f"baseline: no RPC, {c['page_bytes']} B answer", sized["rps"], "/s", None,
        f"2 runs, spread {spread_sized:.0%}", cpu=cpu(sized["cpu_ms_per_request"], None))
    row("  p50 / p99", sized["p50_ms"], "ms", None, _fmt(sized["p99_ms"], "ms") + " p99")
    reserve = results["reserve"]
    row(f"POST /reservations (c={c['concurrency']}, bearer)", reserve["rps"], "/s", rpc["rps"], "rpc route",
        ">= 40%", cpu(reserve.get("cpu_ms_per_request"), rpc["cpu_ms_per_request"]))
    row("  p50", reserve["p50_ms"], "ms", rpc["p50_ms"], "rpc route p50")
    row("  p99", reserve["p99_ms"], "ms", rpc["p99_ms"], "rpc route p99", "<= 300%")
    overload = results["overload"]
    row("end to end under overload (processed/s)", overload["processed_per_s"], "/s", rpc["rps"], "rpc route",
        "CPU <= 4x", cpu(overload.get("cpu_ms_per_reservation"), rpc["cpu_ms_per_request"]))
    growing = ", ".join(f"{k} +{v}/s" for k, v in overload["growing_queues"].items()) or "none"
    rows.append(("  queues growing under overload", growing[:70], "", "", "", "", ""))
    by_service = overload.get("cpu_ms_per_reservation_by_service") or {}
    if by_service:
        rows.append(("  CPU ms per reservation, by service",
                     ", ".join(f"{k} {v:.1f}" for k, v in by_service.items()), "", "", "", "", ""))
    sustained = results["sustained"]
    if sustained:
        row("end to end sustained (no growing backlog)", sustained["processed_per_s"], "/s", rpc["rps"],
            "rpc route", ">= 25%", cpu(sustained.get("cpu_ms_per_reservation"), rpc["cpu_ms_per_request"]))
        rows.append(("  offered / lag growth", f"{sustained['offered_per_s']}/s",
                     "", f"{sustained['lag_growth_per_s']}/s", "", "", ""))
    else:
        last = results["sustain_attempts"][-1]
        row("end to end sustained: NOT REACHED", last["processed_per_s"], "/s", rpc["rps"], "rpc route",
            ">= 35%")
    fresh = results["freshness"]
    half = results["freshness_background"]
    for kind in ("all", "confirm", "ship", "deliver", "cancel"):
        stats = fresh.get(kind) or {}
        if not stats.get("n"):
            continue
        label = f"  {kind} (n={stats['n']}) p50" if kind != "all" else \
            f"MyPage freshness at {half['offered_rps']}/s (n={stats['n']}), p50"
        row(label, stats["p50_ms"], "ms", rpc["p50_ms"], "rpc route p50")
        row("    p99" if kind != "all" else "  p99", stats["p99_ms"], "ms", rpc["p99_ms"], "rpc route p99",
            "<= 150 ms" if kind == "all" else "")
    page = results["mypage"]
    row(f"GET /mypage, {PAGE_ROWS} reservations ({c['page_bytes']} B)", page["rps"], "/s", sized["rps"],
        "no-rpc, same size", ">= 80%", cpu(page.get("cpu_ms_per_request"), sized["cpu_ms_per_request"]))
    row("  the same, against", page["rps"], "/s", norpc["rps"], "no-rpc, tiny answer")
    row("  p50", page["p50_ms"], "ms", sized["p50_ms"], "no-rpc same size p50")
    row("  p99", page["p99_ms"], "ms", sized["p99_ms"], "no-rpc same size p99")
    loadgen_share = max(r.get("loadgen_cpu_share") or 0 for r in
                        results["baseline_rpc"] + results["baseline_norpc"] + [reserve, page])
    loadgen_share = max([loadgen_share] + [r.get("loadgen_cpu_share") or 0 for r in results["baseline_norpc_sized"]])
    header = ("figure", "value", "baseline", "baseline value", "ratio", "target", "CPU ms/req (vs baseline)")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    lines = [" | ".join(str(h).ljust(w) for h, w in zip(header, widths)).rstrip(),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    lines.append("")
    lines.append(f"replicas per back-end service: {c['replicas']}, max_workers (= prefetch): {c['max_workers']}, "
                 f"duration {c['duration_s']}s, concurrency {c['concurrency']}; "
                 f"load generator used at most {loadgen_share:.0%} of one core")
    lines.append("CPU ms/req: CPU time of the processes serving the figure (gateway + reservation for POST, "
                 "all five services until drained for end to end, gateway + mypage for GET /mypage) per request")
    if results["freshness"].get("failures"):
        lines.append(f"freshness probe failures: {results['freshness']['failures']}")
    return "\n".join(lines)


def _spread(values):
    values = [v for v in values if v]
    return (max(values) - min(values)) / mean(values) if len(values) > 1 else 0.0


def _fmt(value, unit):
    if value is None:
        return "-"
    if unit == "/s":
        return f"{value:.0f}/s"
    if unit == "ms":
        return f"{value:.1f} ms"
    return str(value)


@contextlib.contextmanager
def databases(postgres):
    """{SERVICE_DB_URI: uri}: with ``postgres``, a PostgreSQL database of its
    own per service (``DATABASE_HOST``, as ``make up CLUSTER=3``), dropped
    afterwards; else nothing (the SQLite files under the state directory)."""
    if not postgres:
        yield {}
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from ops.clustered import database_uris

    uris = database_uris(prefix=f"bench_{uuid.uuid4().hex[:8]}_")
    try:
        yield {f"{service.upper()}_DB_URI": uri for service, uri in uris.items()}
    finally:
        admin = create_engine(make_url(next(iter(uris.values()))).set(database="postgres"),
                              isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            for uri in uris.values():
                connection.execute(text(f'DROP DATABASE IF EXISTS "{make_url(uri).database}" WITH (FORCE)'))
        admin.dispose()


def run_sweep(args):
    """The end-to-end phase alone, on a fresh system per combination of
    replicas (of each back-end service) and worker pool size (= prefetch)."""
    rows = []
    for replicas in args.sweep_replicas:
        for workers in args.sweep_workers:
            with throwaway_vhost("bookrental-bench") as amqp_uri, databases(args.postgres) as stores:
                vhost = amqp_uri.rsplit("/", 1)[1]
                state_dir = tempfile.mkdtemp(prefix="bookrental-sweep-")
                system = System(amqp_uri, state_dir, replicas, env={"MAX_WORKERS": str(workers), **stores})
                try:
                    log(f"sweep: {replicas} replica(s), max_workers {workers}")
                    system.up()
                    librarian = system.token("librarian", "librarian")
                    books = [system.new_book(librarian, STOCK) for _ in range(BOOKS)]
                    tokens = [system.customer(f"bench-{i}") for i in range(CUSTOMERS)]
                    spec = {"url": system.url, "method": "POST", "path": "/reservations", "tokens": tokens,
                            "bodies": [{"book_id": b} for b in books], "concurrency": args.concurrency}
                    loadgen({**spec, "duration": 3, "warmup": 0})
                    observer = Observer(system.cluster, vhost, stores)
                    observer.drain()
                    accepted_before, cpu_before = observer.accepted(), cpu_seconds(system.pids())
                    with observer:
                        start = time.time()
                        reserve = loadgen({**spec, "duration": args.duration})
                        end = time.time()
                    outcome = analyse(observer.samples, start, end)
                    outcome["drain_s"] = observer.drain()
                    cpu = (cpu_seconds(system.pids()) - cpu_before) * 1000 / max(1, observer.accepted() - accepted_before)
                    rows.append({"store": "postgresql" if stores else "sqlite",
                                 "replicas": replicas, "max_workers": workers, "post_rps": round(reserve["rps"], 1),
                                 "post_p99_ms": reserve["p99_ms"], **outcome, "cpu_ms_per_reservation": round(cpu, 2)})
                    log(f"  {rows[-1]}")
                finally:
                    system.down()
                    shutil.rmtree(state_dir, ignore_errors=True)
    header = ("store", "replicas", "max_workers", "POST /s", "POST p99", "processed /s", "growing under overload",
              "CPU ms/reservation")
    lines = [header] + [(r["store"], r["replicas"], r["max_workers"], f"{r['post_rps']:.0f}", f"{r['post_p99_ms']:.0f} ms",
                         f"{r['processed_per_s']:.0f}",
                         ", ".join(f"{k.split('--')[-1]} +{v}/s" for k, v in r["growing_queues"].items())[:60] or "none",
                         f"{r['cpu_ms_per_reservation']:.1f}") for r in rows]
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    text = "\n".join(" | ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines)
    return rows, text


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "?")
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as handle:
            mem = int(handle.readline().split()[1]) / 1024 / 1024
    except (OSError, ValueError, IndexError):
        mem = 0
    try:
        rabbit = requests.get(f"{MANAGEMENT}/api/overview", timeout=5).json().get("rabbitmq_version", "?")
    except Exception:
        rabbit = "?"
    load = os.getloadavg()[0]
    return (f"{os.cpu_count()} CPUs ({model}), {mem:.0f} GiB RAM, Python {platform.python_version()}, "
            f"RabbitMQ {rabbit}, load average {load:.2f} at the end")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Book Rental benchmark, baselines in the same run")
    parser.add_argument("--duration", type=float, default=float(os.environ.get("DURATION", 20)))
    parser.add_argument("--concurrency", type=int, default=int(os.environ.get("CONCURRENCY", 32)))
    parser.add_argument("--replicas", type=int, default=int(os.environ.get("REPLICAS", 1)))
    parser.add_argument("--probes", type=int, default=4, help="freshness probe customers")
    parser.add_argument("--sustain-fraction", type=float, default=0.9)
    parser.add_argument("--sustain-tries", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the state directory (logs, databases)")
    parser.add_argument("--json", default=os.environ.get("BENCH_JSON", os.path.join(ROOT, "var", "bench",
                                                                                     "latest.json")))
    parser.add_argument("--sweep", action="store_true", help="end to end only, over replicas and pool sizes")
    parser.add_argument("--sweep-replicas", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2])
    parser.add_argument("--sweep-workers", type=lambda v: [int(x) for x in v.split(",")], default=[4, 10, 32])
    parser.add_argument("--postgres", action="store_true", default=bool(os.environ.get("POSTGRES")),
                        help="sweep: every service on PostgreSQL (DATABASE_HOST), databases of its own")
    args = parser.parse_args(argv)
    if args.sweep:
        rows, text = run_sweep(args)
        os.makedirs(os.path.dirname(args.json), exist_ok=True)
        with open(args.json.replace(".json", "-sweep.json"), "w") as handle:
            json.dump({"rows": rows, "machine": machine()}, handle, indent=2)
        print(text)
        print(machine())
        return
    results = run_bench(args)
    results["machine"] = machine()
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as handle:
        json.dump(results, handle, indent=2)
    print(table(results))
    print(results["machine"])


if __name__ == "__main__":
    main()
