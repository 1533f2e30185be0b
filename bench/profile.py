"""``make profile``: where the CPU of one reservation goes, process by process.

``make bench`` says how much a reservation costs; this says where. It starts
the system and the bare Nameko baseline as ``make bench`` does (a throwaway
vhost, processes of their own), then, at one moderate rate (RATE, default
25 reservations a second, open loop: the system keeps up and events come one
at a time, the case the per-reservation target is about):

1. the floors, bare Nameko at RATE, CPU per request of its two processes:
   the HTTP -> RPC route (the floor of ``make bench``), an HTTP route that
   dispatches one event the other process consumes, and an HTTP route alone;
   the difference of the last two is what one event hop costs bare Nameko;
2. the cost: ``POST /reservations`` at RATE for DURATION seconds, then until
   every reservation is fully processed (confirmed, delivery preparing, on
   MyPage); CPU per reservation by process, less what each process spends
   idle (its timers) over the same time; and the messages the broker
   delivered per reservation, by kind (the management API's counters): with
   the floors, what bare Nameko would spend on the same RPCs and event hops
   without writing a row;
3. the profile: the same load again with ``py-spy record --gil`` on every
   process (its samples are taken only while a thread holds the GIL, i.e. is
   running Python; py-spy pauses the process for each sample: with
   ``--nonblocking`` it read stale greenlet stacks here, one of them a third
   of MyPage's samples). For each process: the share of its samples by layer (the
   library or our module the innermost Python frame is in) and the heaviest
   functions of our own code, inclusive.

The cost is measured without the profiler attached; the profile's shares come
from a separate run. Raw stacks are kept in ``var/bench/profile/<process>.txt``
(py-spy's raw format: feed them to flamegraph.pl or speedscope), the numbers
in ``var/bench/profile.json``.
"""
import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from bench.harness import throwaway_vhost
from bench.run import PY, ROOT, Baselines, Observer, System, cpu_seconds, loadgen, log, machine, measured
from common.config import SERVICES

OUT = os.path.join(ROOT, "var", "bench")
PY_SPY = shutil.which("py-spy") or os.path.join(os.path.dirname(PY), "py-spy")
OURS = {"common", "bench", *SERVICES}  # our packages: a frame in one of them is "our code"
# The innermost frame's top-level module -> the layer it is counted in (a
# database driver's Python frames go with SQLAlchemy, which calls them).
LAYERS = {
    "sqlalchemy": "SQLAlchemy", "sqlite3": "SQLAlchemy", "psycopg": "SQLAlchemy", "psycopg2": "SQLAlchemy",
    "marshmallow": "marshmallow",
    "nameko": "Nameko",
    "eventlet": "eventlet", "greenlet": "eventlet", "dns": "eventlet",
    "kombu": "kombu + py-amqp", "amqp": "kombu + py-amqp", "vine": "kombu + py-amqp",
    "logging": "logging", "json": "json",
    "werkzeug": "werkzeug",
    "jwt": "JWT + crypto", "cryptography": "JWT + crypto",
    "limits": "rate limits + Redis", "redis": "rate limits + Redis",
    "prometheus_client": "metrics",
}
ORDER = ["our code", "SQLAlchemy", "marshmallow", "Nameko", "eventlet", "kombu + py-amqp", "logging", "json",
         "werkzeug", "JWT + crypto", "rate limits + Redis", "metrics", "other"]


def _frame_file(frame):
    """'Session.scalar (sqlalchemy/orm/session.py:2421)' -> 'sqlalchemy/orm/session.py'."""
    return frame.rsplit(" (", 1)[-1].rsplit(":", 1)[0] if "(" in frame else ""


def layer_of(frame):
    path = _frame_file(frame)
    top = path.split("/", 1)[0].removesuffix(".py")
    if top in OURS and "/" in path:
        return "our code"
    return LAYERS.get(top, "other")


def summarise(raw_lines, top=8):
    """Shares of samples by layer (innermost frame) and our heaviest functions (inclusive)."""
    layers, ours, total = collections.Counter(), collections.Counter(), 0
    for line in raw_lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames, n = stack.split(";"), int(count)
        total += n
        layers[layer_of(frames[-1])] += n
        seen = set()
        for frame in frames:
            if layer_of(frame) == "our code":
                name = frame.rsplit(":", 1)[0] + ")"  # one entry per function, not per line
                if name not in seen:
                    seen.add(name)
                    ours[name] += n
    if not total:
        return {"samples": 0, "layers": {}, "ours": []}
    return {"samples": total,
            "layers": {name: round(100 * layers[name] / total, 1) for name in ORDER if layers[name]},
            "ours": [(name, round(100 * n / total, 1)) for name, n in ours.most_common(top)]}


def idle_rates(pids_by_name, seconds=5):
    before = {name: cpu_seconds(pids) for name, pids in pids_by_name.items()}
    time.sleep(seconds)
    return {name: (cpu_seconds(pids) - before[name]) / seconds for name, pids in pids_by_name.items()}


def reserve(system, tokens, books, rate, duration):
    return loadgen({"url": system.url, "method": "POST", "path": "/reservations", "tokens": tokens,
                    "bodies": [{"book_id": b} for b in books], "concurrency": 32, "duration": duration,
                    "rate": rate, "warmup": 0})


def deliveries(observer):
    """Messages the broker has delivered from the system's queues, by kind:
    RPC requests, RPC answers, events (durable), hints (mypage_changed)."""
    time.sleep(6)  # the management API's counters are refreshed every 5 s
    kinds = collections.Counter()
    for queue in observer.queue_list("name,type,message_stats.deliver_get"):
        name, count = queue["name"], (queue.get("message_stats") or {}).get("deliver_get", 0)
        if queue.get("type") == "stream":
            continue
        kind = ("rpc answers" if name.startswith("rpc.reply") else "rpc requests" if name.startswith("rpc-")
                else "hints" if "mypage_changed" in name or name.startswith("mypage.events") else "events")
        kinds[kind] += count
    return kinds


def cost(system, observer, tokens, books, rate, duration):
    """CPU ms per fully processed reservation by process, less each one's idle
    rate; messages delivered per reservation, by kind."""
    pids = {name: system.pids(name) for name in SERVICES}
    idle = idle_rates(pids)
    delivered = deliveries(observer)
    accepted, started = observer.accepted(), time.time()
    before = {name: cpu_seconds(p) for name, p in pids.items()}
    result = reserve(system, tokens, books, rate, duration)
    observer.drain()
    elapsed, n = time.time() - started, max(1, observer.accepted() - accepted)
    by_process = {name: round(max(0.0, cpu_seconds(p) - before[name] - idle[name] * elapsed) * 1000 / n, 2)
                  for name, p in pids.items()}
    after = deliveries(observer)
    per_reservation = {kind: round((after[kind] - delivered[kind]) / n, 2) for kind in after}
    return {"reservations": n, "answered_per_s": result["rps"], "p99_ms": result["p99_ms"],
            "by_process": by_process, "total": round(sum(by_process.values()), 2),
            "deliveries_per_reservation": per_reservation}


def profile(system, observer, tokens, books, rate, duration, out_dir):
    spies = {name: subprocess.Popen(  # the first replica of each: one is enough
        [PY_SPY, "record", "--gil", "--rate", "200", "--duration", str(int(duration)), "--format", "raw",
         "--output", os.path.join(out_dir, f"{name}.txt"), "--pid", str(system.pids(name)[0])],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for name in SERVICES}
    time.sleep(1)  # py-spy attached
    reserve(system, tokens, books, rate, duration)
    summaries = {}
    for name, spy in spies.items():
        _, stderr = spy.communicate(timeout=60)
        path = os.path.join(out_dir, f"{name}.txt")
        if spy.returncode != 0 or not os.path.exists(path):
            raise RuntimeError(f"py-spy on {name} failed (it needs ptrace: run as root or with "
                               f"CAP_SYS_PTRACE): {stderr.decode()[-500:]}")
        with open(path) as handle:
            summaries[name] = summarise(handle)
    observer.drain()
    return summaries


def bare_bound(floors, delivered):
    """What bare Nameko spends on a reservation's messages alone: the floor
    route for its RPCs (request and answer), one bare event hop for each
    event delivered. No row written, nothing validated or logged. The hints
    are left out: the gateway reads them on a lean consumer of its own
    (``gateway/inline.py``, under 0.1 ms each), not through a Nameko handler."""
    return round(delivered.get("rpc requests", 0) * floors["rpc"]
                 + delivered.get("events", 0) * floors["event_hop"], 2)


def report(results):
    lines = []
    floors, cost_ = results["floors"], results["cost"]
    floor = floors["rpc"]
    lines.append(f"POST /reservations at {results['rate']}/s, open loop, {results['duration_s']:.0f} s; "
                 f"{cost_['reservations']} reservations, p99 {cost_['p99_ms']} ms")
    lines.append(f"bare Nameko at the same rate, CPU per request: HTTP -> RPC route (the floor) {floor} ms; "
                 f"HTTP route + one event {floors['event']} ms; HTTP route alone {floors['route']} ms; "
                 f"so one event hop {floors['event_hop']} ms")
    lines.append(f"CPU per fully processed reservation: {cost_['total']} ms = {cost_['total'] / floor:.1f}x the floor")
    delivered = cost_["deliveries_per_reservation"]
    bound = bare_bound(floors, delivered)
    lines.append("messages delivered per reservation: " + ", ".join(f"{kind} {n}" for kind, n in sorted(delivered.items())))
    lines.append(f"bare Nameko on those messages alone (RPCs at the floor, each event at one hop; hints aside): "
                 f"{bound} ms = {bound / floor:.1f}x the floor")
    lines.append("")
    names = list(cost_["by_process"])
    header = f"{'':24}" + "".join(f"{n:>13}" for n in names)
    lines.append(header)
    lines.append(f"{'CPU ms / reservation':24}" + "".join(f"{cost_['by_process'][n]:>13.2f}" for n in names))
    lines.append(f"{'py-spy samples':24}" + "".join(f"{results['profile'][n]['samples']:>13}" for n in names))
    for layer in ORDER:
        shares = [results["profile"][n]["layers"].get(layer, 0.0) for n in names]
        if any(shares):
            lines.append(f"{layer + ' %':24}" + "".join(f"{s:>13.1f}" for s in shares))
    for name in names:
        lines.append("")
        lines.append(f"{name}: heaviest functions of our code (inclusive % of its samples)")
        for function, share in results["profile"][name]["ours"]:
            lines.append(f"  {share:5.1f}  {function}")
    lines.append("")
    lines.append(results["machine"])
    return "\n".join(lines)


def run(args):
    out_dir = os.path.join(OUT, "profile")
    os.makedirs(out_dir, exist_ok=True)
    results = {"rate": args.rate, "duration_s": args.duration}
    with throwaway_vhost("bookrental-profile") as amqp_uri:
        vhost = amqp_uri.rsplit("/", 1)[1]
        state_dir = tempfile.mkdtemp(prefix="bookrental-profile-")
        baselines, system = Baselines(amqp_uri, state_dir), System(amqp_uri, state_dir, 1)
        try:
            log(f"starting the baseline and the system (state in {state_dir})")
            baselines.start()
            system.up()
            librarian = system.token("librarian", "librarian")
            books = [system.new_book(librarian, 100_000) for _ in range(8)]
            tokens = [system.customer(f"bench-{i}") for i in range(32)]
            observer = Observer(system.cluster, vhost)
            log("warming up")
            reserve(system, tokens, books, args.rate, 5)
            observer.drain()

            floors = {}
            for name, path in (("rpc", "/rpc"), ("event", "/event"), ("route", "/norpc")):
                log(f"the floor: bare Nameko's POST {path} at {args.rate}/s")
                floors[name] = measured({"url": baselines.url, "method": "POST", "path": path,
                                         "bodies": [{"book_id": 1}], "concurrency": 32, "duration": args.duration,
                                         "rate": args.rate, "warmup": 0}, baselines.pids())["cpu_ms_per_request"]
            floors["event_hop"] = round(max(0.0, floors["event"] - floors["route"]), 2)
            results["floors"] = floors

            log(f"the cost: POST /reservations at {args.rate}/s, no profiler")
            results["cost"] = cost(system, observer, tokens, books, args.rate, args.duration)
            log(f"the profile: the same, py-spy on every process (raw stacks in {out_dir})")
            results["profile"] = profile(system, observer, tokens, books, args.rate, args.duration, out_dir)
        finally:
            log("stopping")
            system.down()
            baselines.stop()
            shutil.rmtree(state_dir, ignore_errors=True)
    results["machine"] = machine()
    with open(os.path.join(OUT, "profile.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description="Where a reservation's CPU goes, by process and layer")
    parser.add_argument("--rate", type=float, default=float(os.environ.get("RATE") or 25))
    parser.add_argument("--duration", type=float, default=float(os.environ.get("DURATION") or 20))
    args = parser.parse_args(argv)
    print(report(run(args)))


if __name__ == "__main__":
    sys.exit(main())
