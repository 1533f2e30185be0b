"""The web app in a real browser, against the five services as processes.

The browser is driven by ``walk.py`` in a child process of plain Python
(``nameko test`` patches this one with eventlet, which Playwright does not
survive); it prints its steps and, last, a JSON verdict. Screenshots of each
role's page land in test-results/browser/.
"""
import importlib.util
import json
import os
import subprocess
import sys
import time

import pytest

from helpers import eventually, rpc

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WALK = os.path.join(ROOT, "tests", "browser", "walk.py")
OUT = os.path.join(ROOT, "test-results", "browser")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
TIMEOUT = 240  # seconds for one walk, start to verdict


@pytest.fixture(scope="module", autouse=True)
def browser_available():
    missing = [what for what, ok in (
        (f"Chromium ({CHROMIUM}; ops/chromium.sh installs it)", os.path.exists(CHROMIUM)),
        ("the playwright package (requirements-dev.txt)", importlib.util.find_spec("playwright") is not None),
    ) if not ok]
    if missing:
        message = "the browser tests need " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


class Walker:
    """One run of walk.py, read line by line."""

    def __init__(self, scenario, url):
        os.makedirs(OUT, exist_ok=True)
        env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST")}
        self.lines = []
        self.process = subprocess.Popen(
            [sys.executable, WALK, scenario, url, OUT], cwd=ROOT, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.deadline = time.time() + TIMEOUT

    def read(self):
        """The next JSON line the walk printed (other lines are kept for the report)."""
        while time.time() < self.deadline:
            line = self.process.stdout.readline()
            if not line:
                return None
            self.lines.append(line.rstrip())
            try:
                return json.loads(line)
            except ValueError:
                continue
        return None

    def wait_for(self, key):
        while True:
            message = self.read()
            if message is None:
                self.fail(f"the walk ended before it was {key}")
            if "ok" in message:  # the walk is over before its time
                self.fail(f"the walk ended before it was {key}: {message.get('error')}")
            if key in message:
                return message

    def send(self, **instruction):
        self.process.stdin.write(json.dumps(instruction) + "\n")
        self.process.stdin.flush()

    def verdict(self):
        while True:
            message = self.read()
            if message is None or "ok" in message:
                break
        try:
            code = self.process.wait(timeout=max(1, self.deadline - time.time()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.fail("the walk did not finish in time")
        if not (message and message.get("ok")) or code != 0:
            self.fail(f"exit {code}: {message and message.get('error')}")
        return message

    def fail(self, why):
        if self.process.poll() is None:
            self.process.kill()
        log = "\n".join(self.lines[-60:])
        pytest.fail(f"browser walk failed: {why}\n--- walk output ---\n{log}", pytrace=False)


def test_the_story_by_the_three_roles_in_a_browser(system):
    """Librarian, alice, bob and courier, each in a browser of their own:
    register and stock; reserve (confirmed, waitlisted); ship and deliver,
    seen live on alice's open MyPage; return, seen live as bob's promotion;
    cancel; a wrong password; no page error; screenshots of every role."""
    verdict = Walker("story", system.gateway_url).verdict()
    timings = [step["ms"] for step in verdict["steps"] if "ms" in step]
    assert len(timings) == 3 and max(timings) <= 2000, verdict["steps"]
    for name in ("librarian", "catalogue", "mypage-alice", "mypage-bob", "courier", "mypage-alice-phone",
                 "signin-wrong-password"):
        assert os.path.getsize(os.path.join(OUT, f"{name}.png")) > 1000, name


def test_an_open_mypage_catches_up_after_a_gateway_restart(system, library):
    """The stream breaks when the gateway stops; a change made meanwhile shows
    once it is back, without a reload, and the next change is pushed again."""
    book = library.new_book(copies=1)
    reservation = library.reserve(library.alice, book["id"])
    library.wait_status(reservation["id"], "confirmed")
    delivery = library.delivery_for(reservation["id"])
    eventually(lambda: library.mypage(library.alice)[reservation["id"]]["delivery_status"] == "preparing")

    walker = Walker("restart", system.gateway_url)
    shown = walker.wait_for("waiting")
    assert [reservation["id"], "confirmed"] in shown.get("rows", []), shown

    system.stop("gateway")
    try:
        with rpc(system.amqp_uri) as cluster:
            cluster.delivery.ship(delivery["id"])
            eventually(lambda: next(row for row in cluster.mypage.get("alice")["reservations"]
                                    if row["reservation_id"] == reservation["id"])["status"] == "shipped")
    finally:
        system.start("gateway")
    walker.send(reservation_id=reservation["id"], status="shipped")

    walker.wait_for("waiting")
    started = time.time()
    library.courier.ok("POST", f"/deliveries/{delivery['id']}/deliver")
    walker.send(reservation_id=reservation["id"], status="delivered", at=started)
    verdict = walker.verdict()
    print(json.dumps(verdict["steps"]))


def test_a_cancel_refused_with_503_says_to_try_again(system, library):
    book = library.new_book(copies=1)
    reservation = library.reserve(library.alice, book["id"])
    library.wait_status(reservation["id"], "confirmed")
    eventually(lambda: reservation["id"] in library.mypage(library.alice))

    walker = Walker("unavailable", system.gateway_url)
    walker.wait_for("waiting")
    system.stop("delivery")
    try:
        walker.send(reservation_id=reservation["id"])
        walker.wait_for("waiting")
    finally:
        system.start("delivery")
    walker.send(go=True)
    walker.verdict()
    assert library.status(reservation["id"]) == "canceled"


def _events(response):
    """(event, data) pairs from an open text/event-stream, as they come."""
    event, data = None, []
    for line in response.iter_lines(chunk_size=None, decode_unicode=True):
        if line == "":
            if event or data:
                yield event or "message", json.loads("\n".join(data)) if data else None
            event, data = None, []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def test_the_live_stream_carries_only_the_customers_own_changes(system, library):
    assert library.anonymous.post("/mypage/events/ticket").status_code == 401
    assert library.courier.post("/mypage/events/ticket").status_code == 403
    assert library.anonymous.get("/mypage/events").status_code == 400
    assert library.anonymous.get("/mypage/events", params={"ticket": "forged"}).status_code == 401

    issued = library.bob.ok("POST", "/mypage/events/ticket")
    assert issued["expires_in"] == 30 and issued["ticket"]
    with library.anonymous.get("/mypage/events", params={"ticket": issued["ticket"]}, stream=True,
                               timeout=20) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["Cache-Control"].startswith("no-cache")
        assert response.headers["X-Accel-Buffering"] == "no"
        events = _events(response)
        assert next(events)[0] == "ready"
        # Once used, the ticket opens nothing more.
        assert library.anonymous.get("/mypage/events", params={"ticket": issued["ticket"]}).status_code == 401

        book = library.new_book(copies=1)
        hers = library.reserve(library.alice, book["id"])
        library.wait_status(hers["id"], "confirmed")
        his = library.reserve(library.bob, book["id"])
        seen = []
        for name, data in events:
            seen.append(data)
            assert name == "mypage_changed", (name, data)
            assert data["reservation_id"] != hers["id"], "bob's stream carried alice's reservation"
            assert set(data) >= {"reservation_id", "book_id", "status", "delivery_status"}
            if data["reservation_id"] == his["id"] and data["status"] == "waitlisted":
                break
        assert all(data["reservation_id"] == his["id"] for data in seen), seen
