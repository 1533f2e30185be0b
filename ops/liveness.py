"""Liveness checks of the supervised local run: a supervisord event listener.

supervisord restarts a process that exits; this restarts one that is still
there but no longer works (hung, wedged, stopped with SIGSTOP), the way a
Kubernetes liveness probe does. On every ``TICK_5`` event (every 5 seconds)
it GETs each running process's liveness URL, all at once:

- a backend: ``/health/live`` on its metrics port (``common/metrics.py``),
  answered by the process's own green threads, with its pid;
- the gateway: ``/health/live`` on its HTTP port.

A check fails when there is no 200 within ``TIMEOUT`` seconds. After
``THRESHOLD`` failures in a row the process is killed (SIGKILL, through the
supervisor), and the supervisor starts it again. Until a process has passed
its first check it is starting, and its failures count only once it has had
``STARTUP`` seconds to get there (Kubernetes' startup probe). An answer from
another pid (two processes on one port, as during a gateway rollout) is no
verdict either way.

The latest result of each process goes to ``run/liveness.json`` (``make
status`` shows it); what it does, to ``log/liveness.log`` and, for a kill,
to the process's own log too.

Run by supervisord as ``python -m ops.liveness <state dir>``; stdout is the
event-listener protocol, so everything else goes to stderr.
"""
import concurrent.futures
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone

from supervisor import childutils

from ops import state

TIMEOUT = 5
THRESHOLD = 3
# A process that has not yet passed a check is starting (importing, migrating,
# connecting): slow on a busy machine (over a minute has been seen on 2 shared
# cores), so as long as Kubernetes' startup probe gives a backend (36 x 5 s).
STARTUP = 180
LISTENER = "liveness"  # its own name in supervisord.conf


def probe(url, pid):
    """(True | False | None, detail): live, not live, or no verdict."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            body = response.read(4096)
    except urllib.error.HTTPError as error:
        return False, f"HTTP {error.code}"
    except Exception as error:  # refused, timed out, reset: not live
        reason = getattr(error, "reason", error)
        return False, f"{type(reason).__name__}: {reason}"[:200]
    try:
        answered = json.loads(body).get("pid")
    except (ValueError, AttributeError):
        answered = None
    if isinstance(answered, int) and answered != pid:
        return None, f"answered by pid {answered}"
    return True, "ok"


class Checker:
    def __init__(self, layout, rpc, log=sys.stderr):
        self.layout = layout
        self.rpc = rpc
        self.log = log
        self.records = {}  # program -> {pid, passed, failures, ...}
        self.killed = set()  # pids killed here, which the supervisor may not have seen exit yet
        self.pool = concurrent.futures.ThreadPoolExecutor(16)

    def say(self, message, **fields):
        line = {"at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "level": "warning",
                "logger": "ops.liveness", "msg": message, **fields}
        print(json.dumps(line), file=self.log, flush=True)
        return line

    def tick(self):
        specs = self.layout.specs()
        running = {info["name"]: info for info in self.rpc.supervisor.getAllProcessInfo()
                   if info["statename"] == "RUNNING" and info["name"] != LISTENER and info["pid"]}
        self.killed &= {info["pid"] for info in running.values()}  # forget those the supervisor saw exit
        running = {name: info for name, info in running.items() if info["pid"] not in self.killed}
        checked = {name: (info, specs[name]) for name, info in running.items()
                   if specs.get(name, {}).get("liveness")}
        futures = {name: self.pool.submit(probe, spec["liveness"], info["pid"])
                   for name, (info, spec) in checked.items()}
        now = time.time()
        records = {}
        for name, future in futures.items():
            info, spec = checked[name]
            record = self.records.get(name)
            if not record or record["pid"] != info["pid"]:
                record = {"pid": info["pid"], "since": info["start"], "passed": False, "failures": 0}
            verdict, detail = future.result()
            record.update(checked_at=now, detail=detail, url=spec["liveness"])
            if verdict:
                record.update(passed=True, failures=0)
            elif verdict is False and (record["passed"] or now - record["since"] >= STARTUP):
                record["failures"] += 1
            records[name] = record
            if record["failures"] >= THRESHOLD:
                self.restart(name, spec, record)
        self.records = records
        state.write_json(self.layout.liveness, {"threshold": THRESHOLD, "timeout": TIMEOUT, "period": 5,
                                                "processes": records})

    def restart(self, name, spec, record):
        line = self.say(f"{name} (pid {record['pid']}) failed its liveness check {record['failures']} times "
                        f"in a row ({record['detail']}); killing it so the supervisor starts it again",
                        service=spec["service"], replica=spec["replica"], pid=record["pid"], url=record["url"])
        try:  # in the process's own log too, where whoever looks at it will look
            with open(self.layout.logfile(spec["service"], spec["replica"]), "a") as handle:
                handle.write(json.dumps(line) + "\n")
        except OSError:
            pass
        try:
            self.rpc.supervisor.signalProcess(name, "KILL")
        except Exception as error:  # gone meanwhile, or stopped by make stop: nothing to do
            self.say(f"{name}: not killed: {error}")
        self.killed.add(record["pid"])
        record["restarted_at"] = time.time()


def main(argv=None):
    layout = state.Layout((argv or sys.argv[1:])[0])
    checker = Checker(layout, childutils.getRPCInterface(os.environ))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        headers, _ = childutils.listener.wait(sys.stdin, sys.stdout)
        if headers.get("eventname", "").startswith("TICK"):
            try:
                checker.tick()
            except Exception as error:  # the next tick tries again
                checker.say(f"liveness checks skipped: {type(error).__name__}: {error}")
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    main()
