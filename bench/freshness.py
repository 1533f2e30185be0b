"""MyPage freshness probe of ``make bench``: how long a state change takes to
show on ``GET /mypage``. A process of its own; prints one JSON object.

Each probe customer goes through reservations one after another, and after
each step polls its own MyPage (small: a few dozen rows) until the step shows:

- confirm: from the ``confirmed`` entry's time in the history (the moment the
  reservation service committed it) to the first MyPage answer showing it;
- ship, deliver (courier), cancel (customer): from the answer of that call
  (the change is committed by then) to the first MyPage answer showing it.

The delivery of a reservation is looked up in the delivery service's SQLite
file (read-only): the API has no "delivery of reservation X" query and the
courier's list is far too long during a benchmark.

    python -m bench.freshness '{"url": ..., "customers": [[name, token], ...],
        "courier": token, "book_id": 1, "delivery_db": path, "duration": 20}'
"""
import asyncio
import json
import sqlite3
import sys
import time
from datetime import datetime

from bench.loadgen import HttpConnection, percentile

POLL_INTERVAL = 0.01  # 4 probes: at most a few hundred GET /mypage a second on top of the load
STEP_TIMEOUT = 30.0


def _epoch(iso):
    return datetime.fromisoformat(iso).timestamp()


async def probe(spec, customer_token, samples, stop_at):
    host, port = spec["url"].split("//")[1].split(":")
    customer = HttpConnection(host, int(port))
    courier = HttpConnection(host, int(port))
    mine = [("Authorization", f"Bearer {customer_token}")]
    theirs = [("Authorization", f"Bearer {spec['courier']}")]
    db = sqlite3.connect(f"file:{spec['delivery_db']}?mode=ro", uri=True, timeout=5)
    cycle = 0

    async def wait_for(reservation_id, check):
        deadline = time.time() + STEP_TIMEOUT
        while time.time() < deadline:
            status, body = await customer.request("GET", "/mypage", headers=mine)
            seen = time.time()
            if status == 200:
                for row in json.loads(body)["reservations"]:
                    if row["reservation_id"] == reservation_id and check(row):
                        return seen, row
            await asyncio.sleep(POLL_INTERVAL)
        raise TimeoutError(f"MyPage did not show the change of {reservation_id}")

    async def delivery_id(reservation_id):
        deadline = time.time() + STEP_TIMEOUT
        while time.time() < deadline:
            row = db.execute("SELECT id FROM deliveries WHERE reservation_id = ?", (reservation_id,)).fetchone()
            if row:
                return row[0]
            await asyncio.sleep(POLL_INTERVAL)
        raise TimeoutError(f"no delivery for {reservation_id}")

    async def step(kind, connection, headers, path, reservation_id, check):
        status, body = await connection.request("POST", path, body={}, headers=headers)
        if status != 200:
            raise RuntimeError(f"{kind}: {status} {body[:200]!r}")
        changed = time.time()
        seen, _ = await wait_for(reservation_id, check)
        samples.setdefault(kind, []).append(seen - changed)

    try:
        while time.time() < stop_at:
            status, body = await customer.request("POST", "/reservations", body={"book_id": spec["book_id"]},
                                                  headers=mine)
            if status != 202:
                raise RuntimeError(f"reserve: {status} {body[:200]!r}")
            rid = json.loads(body)["id"]
            seen, row = await wait_for(rid, lambda r: r["status"] == "confirmed")
            confirmed_at = next(e["at"] for e in row["history"] if e["status"] == "confirmed")
            samples.setdefault("confirm", []).append(seen - _epoch(confirmed_at))
            if cycle % 2 == 0:
                did = await delivery_id(rid)
                await step("ship", courier, theirs, f"/deliveries/{did}/ship", rid,
                           lambda r: r["delivery_status"] == "shipped")
                await step("deliver", courier, theirs, f"/deliveries/{did}/deliver", rid,
                           lambda r: r["delivery_status"] == "delivered")
            else:
                await step("cancel", customer, mine, f"/reservations/{rid}/cancel", rid,
                           lambda r: r["status"] == "canceled")
            cycle += 1
    finally:
        customer.close()
        courier.close()
        db.close()


async def run(spec):
    samples = {}
    stop_at = time.time() + float(spec.get("duration", 20))
    results = await asyncio.gather(*(probe(spec, token, samples, stop_at) for _, token in spec["customers"]),
                                   return_exceptions=True)
    failures = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, Exception)]
    out = {"failures": failures}
    every = []
    for kind, values in sorted(samples.items()):
        values.sort()
        every += values
        out[kind] = _stats(values)
    every.sort()
    out["all"] = _stats(every)
    return out


def _stats(values):
    if not values:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {"n": len(values), "p50_ms": round(percentile(values, 50) * 1000, 1),
            "p99_ms": round(percentile(values, 99) * 1000, 1), "max_ms": round(values[-1] * 1000, 1)}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    print(json.dumps(asyncio.run(run(json.loads(argv[0] if argv else sys.stdin.read())))))


if __name__ == "__main__":
    main()
