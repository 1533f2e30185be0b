"""The web app in a real browser, against the five services as processes.

The browser is driven by ``walk.py`` in a child process of plain Python
(``nameko test`` patches this one with eventlet, which Playwright does not
survive); it prints its steps and, last, a JSON verdict. Screenshots of each
role's page land in test-results/browser/ (`make screenshots` copies the
README's into docs/screenshots/).

Every test of the module shares one running system. The screens whose API
route comes with another issue are tested where the gateway offers that
route (its OpenAPI document says so) and skipped, naming the route, where not.
"""
import importlib.util
import json
import os
import random
import subprocess
import sys
import time
import uuid

import pytest
import requests

from helpers import eventually, rpc

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WALK = os.path.join(ROOT, "tests", "browser", "walk.py")
OUT = os.path.join(ROOT, "test-results", "browser")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
AXE = os.path.join(ROOT, "tests", "browser", "node_modules", "axe-core", "axe.min.js")
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


@pytest.fixture(scope="module")
def axe_installed():
    """axe-core, pinned in tests/browser/package.json, installed by ops/axe.sh (make axe)."""
    if not os.path.exists(AXE):
        message = f"the accessibility audit needs axe-core at {AXE} (make axe)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def api(system):
    """The gateway's OpenAPI document: which routes and fields it offers."""
    return requests.get(f"{system.gateway_url}/openapi.json", timeout=10).json()


def offered(api, method, path, query=None, field=None):
    """Skip the calling test, naming what is missing, unless the gateway
    offers ``method path`` (with the query parameter or body field named)."""
    operation = api["paths"].get(path, {}).get(method.lower())
    what = f"{method} {path}"
    if operation is not None and query:
        what += f"?{query}="
        if query not in [p.get("name") for p in operation.get("parameters", []) if p.get("in") == "query"]:
            operation = None
    if operation is not None and field:
        what += f" with {field!r}"
        schema = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
        if "$ref" in schema:
            schema = api["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        if field not in schema.get("properties", {}):
            operation = None
    if operation is None:
        pytest.skip(f"needs {what} (SPEC §5), which this gateway does not offer yet")


def new_book(library, copies=1, title=None, author="A. Author"):
    return library.new_book(copies=copies, title=title, author=author)


def done_with(library, customer, *reservation_ids):
    """Return or cancel what a test reserved, so the customer stays within the
    lending limits (SPEC §8) for the tests after it."""
    for reservation_id in reservation_ids:
        status = library.status(reservation_id)
        if status == "delivered":
            customer.ok("POST", f"/reservations/{reservation_id}/return")
        elif status in ("requested", "waitlisted", "confirmed", "shipped"):
            customer.ok("POST", f"/reservations/{reservation_id}/cancel")


class Walker:
    """One run of walk.py, read line by line."""

    def __init__(self, scenario, url, params=None):
        os.makedirs(OUT, exist_ok=True)
        env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST")}
        self.lines = []
        self.process = subprocess.Popen(
            [sys.executable, WALK, scenario, url, OUT, json.dumps(params or {})], cwd=ROOT, env=env, text=True,
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
    for name in README_SHOTS:
        assert os.path.getsize(os.path.join(OUT, "readme", f"{name}.png")) > 1000, name


# The README's pictures, taken by the story at desktop width (make screenshots).
README_SHOTS = ("signin", "customer-catalogue", "customer-mypage", "librarian-stock", "courier-deliveries")


def test_an_open_mypage_catches_up_after_a_gateway_restart(system, library):
    """The stream breaks when the gateway stops; a change made meanwhile shows
    once it is back, without a reload, and the next change is pushed again."""
    book = new_book(library, copies=1)
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
    book = new_book(library, copies=1)
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

        book = new_book(library, copies=1)
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


# -- every page fits and is accessible; the keyboard alone; errors in words ---------

def test_every_page_fits_every_window_and_is_accessible(system, library, axe_installed):
    """Signed out, and every page of each role, at 360, 1200 and 1920 pixels:
    no element beyond the right edge, no sideways scrolling, no axe-core
    violation. The library holds what is hardest to lay out: a 300-letter
    title with no space, a 300-letter author, markup as a title; reservations
    in every state; deliveries to ship and on the way."""
    endless = new_book(library, copies=1, title="W" * 300, author="Q" * 300)
    markup = new_book(library, copies=1, title='<img src=x onerror="alert(1)"> & <b>bold</b>')
    none_left = new_book(library, copies=0, title="A title every copy of which is out")
    confirmed = library.reserve(library.alice, endless["id"])
    shipped = library.reserve(library.alice, markup["id"])
    waiting = library.reserve(library.alice, none_left["id"])
    for reservation in (confirmed, shipped):
        library.wait_status(reservation["id"], "confirmed")
    library.wait_status(waiting["id"], "waitlisted")
    library.courier.ok("POST", f"/deliveries/{library.delivery_for(shipped['id'])['id']}/ship")
    library.delivery_for(confirmed["id"])
    eventually(lambda: library.mypage(library.alice)[shipped["id"]]["delivery_status"] == "shipped")

    verdict = Walker("audit", system.gateway_url).verdict()
    done_with(library, library.alice, confirmed["id"], shipped["id"], waiting["id"])
    checked = {tuple(pair) for pair in verdict["details"]["checked"]}
    for name in ("signin", "visitor-catalogue", "customer-catalogue", "customer-mypage", "librarian-stock",
                 "librarian-catalogue", "courier-deliveries"):
        for width in (360, 1200, 1920):
            assert (name, width) in checked, (name, width)
            assert os.path.getsize(os.path.join(OUT, f"{name}-{width}.png")) > 1000
    print(json.dumps({"checked": len(checked), "not_offered": verdict["details"]["not_offered"],
                      "seconds": verdict["details"]["seconds"]}))


def test_reserve_and_cancel_with_the_keyboard_alone(system, library, axe_installed):
    title = f"Kindred {uuid.uuid4().hex[:6]}"
    book = new_book(library, copies=1, title=title, author="Octavia E. Butler")
    verdict = Walker("keyboard", system.gateway_url, {"book_id": book["id"], "title": title}).verdict()
    assert library.status(verdict["details"]["reservation_id"]) == "canceled"


def test_an_expired_sign_in_and_a_conflict_are_said_in_words(system, library):
    book = new_book(library, copies=1)
    reservation = library.reserve(library.bob, book["id"])
    library.wait_status(reservation["id"], "confirmed")
    delivery = library.delivery_for(reservation["id"])
    walker = Walker("errors", system.gateway_url, {"delivery_id": delivery["id"]})
    walker.wait_for("waiting")
    library.courier.ok("POST", f"/deliveries/{delivery['id']}/ship")  # behind the open page's back
    walker.send(go=True)
    verdict = walker.verdict()
    assert verdict["details"]["conflict"]


# -- the screens of the other issues' routes ------------------------------------------

def test_a_customer_edits_email_and_address(system, library, api):
    offered(api, "GET", "/account")
    offered(api, "PATCH", "/account")
    email = library.alice.ok("GET", "/account")["email"] or ""
    address = f"{random.randrange(1, 200)} Rue des Lilas\n75020 Paris"
    Walker("profile", system.gateway_url, {"email": email, "address": address}).verdict()
    assert library.alice.ok("GET", "/account")["address"] == address


def test_the_notices_page_lists_what_was_sent(system, library, api):
    offered(api, "GET", "/notifications")
    book = new_book(library, copies=1)
    reservation = library.reserve(library.alice, book["id"])
    eventually(lambda: any(item["reservation_id"] == reservation["id"]
                           for item in library.alice.ok("GET", "/notifications?limit=500")["items"]), timeout=30)
    Walker("notices", system.gateway_url, {"reservation_id": reservation["id"]}).verdict()
    done_with(library, library.alice, reservation["id"])


def test_the_catalogue_search_box(system, library, api):
    offered(api, "GET", "/books", query="q")
    word = f"zanzibar{uuid.uuid4().hex[:6]}"
    book = new_book(library, copies=1, title=f"The {word} Affair")
    Walker("search", system.gateway_url, {"query": word, "book_id": book["id"]}).verdict()


def test_a_loan_shows_its_due_date_and_renews(system, library, api):
    offered(api, "POST", "/reservations/{reservation_id}/renew")
    book = new_book(library, copies=1)
    reservation = library.reserve(library.alice, book["id"])
    library.wait_status(reservation["id"], "confirmed")
    delivery = library.delivery_for(reservation["id"])
    library.courier.ok("POST", f"/deliveries/{delivery['id']}/ship")
    library.courier.ok("POST", f"/deliveries/{delivery['id']}/deliver")
    eventually(lambda: library.mypage(library.alice)[reservation["id"]].get("due_at"))
    Walker("renew", system.gateway_url, {"reservation_id": reservation["id"]}).verdict()
    done_with(library, library.alice, reservation["id"])


def test_mypage_shows_older_reservations_a_page_at_a_time(system, library, api):
    offered(api, "GET", "/mypage", query="limit")
    ids = []
    for _ in range(5):  # canceled at once: the lending limits count live reservations only
        reservation = library.reserve(library.alice, new_book(library, copies=1)["id"])
        library.alice.ok("POST", f"/reservations/{reservation['id']}/cancel")
        ids.append(reservation["id"])
    eventually(lambda: set(ids) <= set(library.mypage(library.alice)))
    verdict = Walker("older", system.gateway_url, {"reservation_ids": ids}).verdict()
    assert verdict["details"]["pages"] >= 3


def test_the_courier_sees_where_each_delivery_goes(system, library, api):
    offered(api, "POST", "/reservations", field="address")
    address = f"{random.randrange(1, 200)} Baker Street, London"
    book = new_book(library, copies=1)
    reservation = library.alice.ok(
        "POST", "/reservations", 202, json={"book_id": book["id"], "address": address})
    library.wait_status(reservation["id"], "confirmed")
    assert library.delivery_for(reservation["id"])["address"] == address
    Walker("address", system.gateway_url, {"reservation_id": reservation["id"], "address": address}).verdict()
    done_with(library, library.alice, reservation["id"])


def test_a_librarian_traces_a_reservation(system, library, api, axe_installed):
    """The Trace page (GET /reservations/{id}/events): the keyboard alone,
    the events in the log's order, every window, axe-core, errors in words."""
    offered(api, "GET", "/reservations/{reservation_id}/events")
    reservation = library.reserve(library.alice, new_book(library, copies=1)["id"])
    library.wait_status(reservation["id"], "confirmed")
    library.delivery_for(reservation["id"])
    library.alice.ok("POST", f"/reservations/{reservation['id']}/cancel")
    eventually(lambda: library.mypage(library.alice)[reservation["id"]]["delivery_status"] == "canceled")
    path = f"/reservations/{reservation['id']}/events"
    counts = []  # the story is over once two reads a second apart agree

    def settled():
        counts.append(len(library.librarian.ok("GET", path)["items"]))
        time.sleep(0.5)
        return len(counts) > 1 and counts[-1] == counts[-2]

    eventually(settled, timeout=30)
    events = library.librarian.ok("GET", path)["items"]
    verdict = Walker("trace", system.gateway_url, {
        "reservation_id": reservation["id"], "event_types": [item["event_type"] for item in events]}).verdict()
    assert {tuple(pair) for pair in verdict["details"]["checked"]} >= {
        ("librarian-trace", width) for width in (360, 1200, 1920)}
    assert os.path.getsize(os.path.join(OUT, "readme", "librarian-trace.png")) > 1000  # the README's picture


def test_the_new_screens_on_answers_shaped_as_the_spec_says(system, library, axe_installed):
    """Before their routes are here: profile, notices, search, due date,
    overdue, place in line, Renew, Show older and the courier's address, on
    answers shaped as SPEC §5 says (walk.spec_shaped), fit every window, pass
    axe-core and behave. The tests above run them against the real routes."""
    word = f"quixote{uuid.uuid4().hex[:6]}"
    loans = [library.reserve(library.alice, new_book(library, copies=1, title=f"Don {word} {n}")["id"]) for n in (1, 2)]
    for loan in loans:
        library.wait_status(loan["id"], "confirmed")
        delivery = library.delivery_for(loan["id"])
        library.courier.ok("POST", f"/deliveries/{delivery['id']}/ship")
        library.courier.ok("POST", f"/deliveries/{delivery['id']}/deliver")
    waiting = library.reserve(library.alice, new_book(library, copies=0)["id"])
    library.wait_status(waiting["id"], "waitlisted")
    to_ship = library.reserve(library.bob, new_book(library, copies=1)["id"])
    library.wait_status(to_ship["id"], "confirmed")
    library.delivery_for(to_ship["id"])
    eventually(lambda: library.mypage(library.alice)[waiting["id"]]["status"] == "waitlisted")
    try:
        Walker("preview", system.gateway_url, {"query": f"{word} 2"}).verdict()
    finally:
        done_with(library, library.alice, *(loan["id"] for loan in loans), waiting["id"])
        done_with(library, library.bob, to_ship["id"])
