"""Does a replica freeze while one of its queries waits for a PostgreSQL lock?

Run by hand (``.venv/bin/python tests/storage/bench_psycogreen.py``) against
the PostgreSQL of the storage tests; prints one line per way of running
psycopg2 under eventlet:

- ``blocking``: ``eventlet.monkey_patch(psycopg=False)``: libpq blocks;
- ``eventlet``: ``eventlet.monkey_patch()``, what ``nameko run`` and ``nameko
  test`` call: eventlet's own psycopg2 wait callback (the one psycogreen has);
- ``psycogreen``: ``monkey_patch(psycopg=False)`` plus psycogreen's patch
  (only if psycogreen is installed; it is not a requirement).

Two measurements each:

- *stall*: another replica (a second process) holds the service's write lock
  for HOLD seconds; here one green thread starts a write transaction (it must
  wait), while another ticks every 10 ms and answers "RPCs" (a SELECT 1).
  Reported: the longest gap between two ticks, and how many reads were
  answered while the writer waited.
- *contention*: 3 processes x 5 green threads run write transactions on one
  title row (lock, read, update) for SECONDS, while a green thread in each
  reads every 10 ms. Reported: write transactions per second in all, the
  reads' worst latency and how many reads were done (a reader that never ran
  counts as having waited the whole time).

With ``blocking``, libpq blocks the whole process while it waits: nothing
else in the replica runs (not its RPCs, not its heartbeats). With a wait
callback, only the green thread that waits does.
"""
import os
import subprocess
import sys
import time

import eventlet

MODE = sys.argv[3] if sys.argv[1:2] in (["mode"], ["contend"]) else "eventlet"
eventlet.monkey_patch(psycopg=MODE == "eventlet")
if MODE == "psycogreen":
    from psycogreen.eventlet import patch_psycopg

    patch_psycopg()

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests"), os.path.dirname(os.path.abspath(__file__))]

from sqlalchemy import create_engine, text  # noqa: E402

HOLD = 1.0
SECONDS = 4.0
LOCK = 4242


def warm(engine):
    """Connect once before going concurrent: SQLAlchemy initialises the
    dialect on the first connection under a lock that is not green (Store
    does it in setup, by migrating)."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    return engine


def stall(uri):
    engine = warm(create_engine(uri, pool_size=5))
    holder = subprocess.Popen([sys.executable, __file__, "hold", uri], stdout=subprocess.PIPE)
    holder.stdout.readline()  # the other replica has the lock
    gaps, reads, writer_done, stop = [], [0], eventlet.event.Event(), [False]

    def writer():
        with engine.begin() as connection:
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK})
        writer_done.send(time.time())

    def ticker():
        last = time.time()
        while not stop[0]:
            eventlet.sleep(0.01)
            now = time.time()
            gaps.append(now - last)
            last = now

    def reader():
        while not writer_done.ready():
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            reads[0] += 1
            eventlet.sleep(0.01)

    helpers = [eventlet.spawn(ticker), eventlet.spawn(reader)]
    eventlet.sleep(0.05)  # both running
    reads[0] = 0
    started = time.time()
    eventlet.spawn(writer).wait()
    eventlet.sleep(0.05)
    stop[0] = True
    for thread in helpers:
        thread.wait()
    holder.wait()
    engine.dispose()
    return {"writer_waited_s": round(writer_done.wait() - started, 2), "longest_stall_ms": round(max(gaps) * 1000),
            "reads_while_waiting": reads[0]}


def hold(uri):
    engine = create_engine(uri)
    with engine.begin() as connection:
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK})
        print("held", flush=True)
        time.sleep(HOLD)
    engine.dispose()


def contend(uri):
    engine = warm(create_engine(uri, pool_size=10))
    deadline = time.time() + SECONDS
    done, latencies = [0], []

    def writer():
        while time.time() < deadline:
            with engine.begin() as connection:
                connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LOCK})
                stock = connection.execute(text("SELECT stock FROM bench_titles WHERE id = 1 FOR UPDATE")).scalar()
                connection.execute(text("UPDATE bench_titles SET stock = :s WHERE id = 1"), {"s": stock + 1})
            done[0] += 1

    def reader():
        while time.time() < deadline:
            started = time.time()
            with engine.connect() as connection:
                connection.execute(text("SELECT stock FROM bench_titles WHERE id = 1"))
            latencies.append(time.time() - started)
            eventlet.sleep(0.01)

    threads = [eventlet.spawn(writer) for _ in range(5)] + [eventlet.spawn(reader)]
    for thread in threads:
        thread.wait()
    engine.dispose()
    # A reader that never got to run waited the whole time.
    print(done[0], round(max(latencies, default=SECONDS) * 1000), len(latencies), flush=True)


def contention(uri):
    engine = create_engine(uri)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS bench_titles"))
        connection.execute(text("CREATE TABLE bench_titles (id INTEGER PRIMARY KEY, stock INTEGER)"))
        connection.execute(text("INSERT INTO bench_titles VALUES (1, 0)"))
    replicas = [subprocess.Popen([sys.executable, __file__, "contend", uri, MODE],
                                 stdout=subprocess.PIPE) for _ in range(3)]
    results = [replica.communicate()[0].decode().split() for replica in replicas]
    with engine.connect() as connection:
        stock = connection.execute(text("SELECT stock FROM bench_titles WHERE id = 1")).scalar()
    engine.dispose()
    writes = sum(int(r[0]) for r in results)
    assert stock == writes, (stock, writes)  # not one update lost
    return {"writes_per_s": round(writes / SECONDS), "worst_read_ms": max(int(r[1]) for r in results),
            "reads": sum(int(r[2]) for r in results)}


def main():
    if sys.argv[1:2] == ["hold"]:
        return hold(sys.argv[2])
    if sys.argv[1:2] == ["contend"]:
        return contend(sys.argv[2])
    from servers import require_postgres, throwaway_databases

    require_postgres()
    with throwaway_databases("bench") as uris:
        modes = ["blocking", "eventlet"]
        try:
            import psycogreen  # noqa: F401

            modes.append("psycogreen")
        except ImportError:
            pass
        for mode in modes:  # each in a process of its own: the patches are global
            subprocess.run([sys.executable, __file__, "mode", uris["bench"], mode], check=True)
    return None


if __name__ == "__main__" and sys.argv[1:2] == ["mode"]:
    uri = sys.argv[2]
    print(f"{MODE:10}  stall: {stall(uri)}  contention: {contention(uri)}", flush=True)
elif __name__ == "__main__":
    main()
