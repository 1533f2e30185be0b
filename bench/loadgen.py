"""The load generator of ``make bench``: asyncio, raw HTTP/1.1 keep-alive.

Runs in a process of its own and prints one JSON object, so it is never
the thing being measured: it reports its own CPU time next to the figures
(a few percent of one core at the rates this system reaches).

    python -m bench.loadgen '{"url": "http://127.0.0.1:8000", "method": "POST",
        "path": "/reservations", "bodies": [{"book_id": 1}], "tokens": ["..."],
        "concurrency": 32, "duration": 20}'

- closed loop (default): ``concurrency`` connections, each sending its next
  request as soon as the previous answer arrived, for ``duration`` seconds;
- open loop (``"rate": r``): ``r`` requests a second on a fixed schedule,
  over at most ``concurrency`` connections; a request that finds no free
  connection waits, and its latency counts from when it was due (no
  coordinated omission).

Connection ``i`` sends ``Authorization: Bearer tokens[i % len(tokens)]``;
request ``n`` of a connection sends ``bodies[n % len(bodies)]``.
"""
import asyncio
import itertools
import json
import resource
import sys
import time
from urllib.parse import urlsplit


class HttpConnection:
    """One keep-alive HTTP/1.1 connection; just enough for JSON APIs."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def request(self, method, path, body=None, headers=()):
        if self.writer is None:
            await self.open()
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        head += [f"{name}: {value}" for name, value in headers]
        if body is not None:
            head += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        try:
            status, response = await self._response()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.close()
            raise
        return status, response

    async def _response(self):
        header = await self.reader.readuntil(b"\r\n\r\n")
        lines = header.split(b"\r\n")
        status = int(lines[0].split()[1])
        length, close, chunked = 0, False, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            body = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        else:
            body = await self.reader.readexactly(length) if length else b""
        if close:
            self.close()
        return status, body


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[index]


def summary(latencies, statuses, errors, wall, cpu):
    ok = sorted(latencies)
    return {
        "requests": len(latencies), "rps": len(latencies) / wall if wall else 0.0,
        "p50_ms": _ms(percentile(ok, 50)), "p90_ms": _ms(percentile(ok, 90)),
        "p99_ms": _ms(percentile(ok, 99)), "max_ms": _ms(ok[-1] if ok else None),
        "statuses": {str(k): v for k, v in sorted(statuses.items())}, "errors": errors,
        "wall_s": round(wall, 2), "loadgen_cpu_s": round(cpu, 2),
        "loadgen_cpu_share": round(cpu / wall, 3) if wall else None,
    }


def _ms(seconds):
    return None if seconds is None else round(seconds * 1000, 2)


def _cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(spec):
    url = urlsplit(spec["url"])
    method, path = spec.get("method", "GET"), spec["path"]
    bodies = spec.get("bodies") or [None]
    tokens = spec.get("tokens") or [None]
    concurrency, duration = int(spec.get("concurrency", 32)), float(spec.get("duration", 20))
    rate = spec.get("rate")
    warmup = float(spec.get("warmup", 1.0))
    latencies, statuses, errors = [], {}, {"count": 0, "kinds": {}}
    bodies_cycle = itertools.count()

    def headers_for(i):
        token = tokens[i % len(tokens)]
        return [("Authorization", f"Bearer {token}")] if token else []

    def record(status, latency, measuring):
        if not measuring:
            return
        statuses[status] = statuses.get(status, 0) + 1
        if 200 <= status < 300:
            latencies.append(latency)

    def record_error(error, measuring):
        if measuring:
            errors["count"] += 1
            kind = type(error).__name__
            errors["kinds"][kind] = errors["kinds"].get(kind, 0) + 1

    connections = [HttpConnection(url.hostname, url.port or 80) for _ in range(concurrency)]
    await asyncio.gather(*(c.open() for c in connections))
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + duration

    async def closed_worker(i):
        connection, own_headers = connections[i], headers_for(i)
        while True:
            sent = time.perf_counter()
            if sent >= stop_at:
                return
            body = bodies[next(bodies_cycle) % len(bodies)]
            try:
                status, _ = await connection.request(method, path, body, own_headers)
                record(status, time.perf_counter() - sent, sent >= measure_from)
            except Exception as error:  # counted, never fatal: the next request reconnects
                record_error(error, sent >= measure_from)
                await asyncio.sleep(0.05)

    async def open_loop():
        free = asyncio.Queue()
        for i in range(concurrency):
            free.put_nowait(i)
        interval = 1.0 / float(rate)
        tasks = set()

        async def one(due):
            i = await free.get()
            body = bodies[next(bodies_cycle) % len(bodies)]
            try:
                status, _ = await connections[i].request(method, path, body, headers_for(i))
                record(status, time.perf_counter() - due, due >= measure_from)
            except Exception as error:
                record_error(error, due >= measure_from)
            finally:
                free.put_nowait(i)

        n = 0
        while True:
            due = start + n * interval
            if due >= stop_at:
                break
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.ensure_future(one(due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        if tasks:
            await asyncio.wait(tasks, timeout=30)

    cpu0 = _cpu()
    if rate:
        await open_loop()
    else:
        await asyncio.gather(*(closed_worker(i) for i in range(concurrency)))
    wall = time.perf_counter() - measure_from
    cpu = _cpu() - cpu0
    for connection in connections:
        connection.close()
    result = summary(latencies, statuses, errors, min(wall, duration) if not rate else duration, cpu)
    result.update({"method": method, "path": path, "concurrency": concurrency,
                   "offered_rps": rate, "duration_s": duration})
    return result


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(argv[0] if argv else sys.stdin.read())
    print(json.dumps(asyncio.run(run(spec))))


if __name__ == "__main__":
    main()
