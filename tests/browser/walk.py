"""Walk the web app in a real browser (Debian's Chromium, driven by Playwright).

    python tests/browser/walk.py story   <gateway_url> <out_dir>
    python tests/browser/walk.py restart <gateway_url> <out_dir>
    python tests/browser/walk.py unavailable <gateway_url> <out_dir>

Run with plain Python: ``nameko test`` monkey-patches the process with
eventlet, which Playwright's own event loop does not survive, so the tests
start this script as a child process and read its verdict: the last line of
standard output is a JSON object ``{"ok": bool, "steps": [...], "error": ...}``;
the exit status is 0 only when every step passed. Screenshots go to out_dir.

``story`` is SPEC §1 through the pages of the three roles, each in its own
browser context. ``restart`` opens alice's MyPage, prints
``{"waiting": "restart", ...}`` and reads one line from standard input: in the
meantime the test stops the gateway, changes the reservation behind its back
and starts it again; the page must catch up by itself. ``unavailable``
cancels while the test has stopped the delivery service: the page must say
to try again, in words.
"""
import json
import os
import re
import sys
import time
import traceback
import uuid

from playwright.sync_api import expect, sync_playwright

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]
LIVE_MS = 2000  # SPEC §7: a change appears on an open MyPage within 2 seconds
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
# What the browser itself logs for an answer the page asked for and handles:
# the wrong password of the story is a 401. Anything else logged as an error
# (a script error, a CSP violation, a failed asset) fails the walk.
EXPECTED_CONSOLE = re.compile(r"Failed to load resource: the server responded with a status of 401")


class Walk:
    def __init__(self, browser, base_url, out_dir):
        self.browser = browser
        self.base = base_url.rstrip("/")
        self.out = out_dir
        self.steps = []
        self.problems = []  # page errors and console errors, with whose page
        self.allowed_console = [EXPECTED_CONSOLE]

    def step(self, text, **facts):
        self.steps.append({"step": text, "t": round(time.time(), 3), **facts})
        print(json.dumps({"step": text, **facts}), flush=True)

    def open(self, who, viewport=DESKTOP):
        context = self.browser.new_context(viewport=viewport, base_url=self.base)
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.on("pageerror", lambda error: self.problems.append(f"{who}: page error: {error}"))

        def console(message):
            if message.type == "error" and not any(p.search(message.text) for p in self.allowed_console):
                self.problems.append(f"{who}: console error: {message.text}")

        page.on("console", console)
        page.goto("/")
        return page

    def shot(self, page, name):
        path = os.path.join(self.out, f"{name}.png")
        page.screenshot(path=path, full_page=True)
        return path

    @staticmethod
    def sign_in(page, username, password=None):
        form = page.locator("form#signin")
        expect(form).to_be_visible()
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", password or username)
        form.locator("button[type=submit]").click()
        expect(page.locator("#who-name")).to_contain_text(username)

    @staticmethod
    def sign_out(page):
        page.click("#sign-out")
        expect(page.locator("form#signin")).to_be_visible()
        expect(page.locator("#signin-message")).to_contain_text("signed out")

    @staticmethod
    def goto(page, route):
        page.click(f"#nav a[href='#/{route}']")
        expect(page.locator("body")).to_have_attribute("data-view", route)

    @staticmethod
    def mark(page):
        """A value that only survives if the page is never reloaded."""
        marker = uuid.uuid4().hex
        page.evaluate("(m) => { window.__noReload = m; }", marker)
        return marker

    @staticmethod
    def assert_not_reloaded(page, marker):
        assert page.evaluate("() => window.__noReload") == marker, "the page was reloaded"

    @staticmethod
    def row(page, reservation_id):
        return page.locator(f"li.reservation[data-reservation-id='{reservation_id}']")

    def wait_status(self, page, reservation_id, status, started, within_ms=LIVE_MS, who=""):
        """Wait for the row to show ``status``; the time it took counts from ``started``."""
        row = self.row(page, reservation_id)
        expect(row).to_have_attribute("data-status", status, timeout=within_ms + 8000)
        took = round((time.time() - started) * 1000)
        self.step(f"{who} MyPage shows {status} live", ms=took)
        assert took <= within_ms, f"{who}'s MyPage showed {status} after {took} ms (more than {within_ms} ms)"
        expect(row.locator(".badge")).to_have_text(status)
        return took

    def check_clean(self):
        assert not self.problems, "; ".join(self.problems)


def story(walk):
    title = f"The Left Hand of Darkness {uuid.uuid4().hex[:6]}"
    restock_title = f"Solaris {uuid.uuid4().hex[:6]}"

    # -- a wrong password is said in words --------------------------------
    stranger = walk.open("stranger")
    stranger.fill("input[name=username]", "alice")
    stranger.fill("input[name=password]", "not-her-password")
    stranger.locator("form#signin button[type=submit]").click()
    message = stranger.locator("#signin-message")
    expect(message).to_contain_text("Wrong username or password")
    assert "{" not in message.inner_text(), "the sign-in error shows JSON"
    walk.shot(stranger, "signin-wrong-password")
    walk.step("a wrong password shows a message in words", message=message.inner_text())

    # -- the librarian registers a title and stocks another -----------------
    librarian = walk.open("librarian")
    walk.sign_in(librarian, "librarian")
    expect(librarian.locator("body")).to_have_attribute("data-view", "stock")
    form = librarian.locator("form#register-book")
    form.locator("button[type=submit]").click()  # empty: said next to the fields
    expect(form.locator("#book-title-error")).to_contain_text("fill this in")
    for name, value in (("isbn", "978-0-441-47812-5"), ("title", title), ("author", "Ursula K. Le Guin"), ("copies", "1")):
        form.locator(f"input[name={name}]").fill(value)
    form.locator("button[type=submit]").click()
    expect(form.locator(".msg")).to_contain_text("Registered")
    book_row = librarian.locator("#stock-rows tr", has_text=title)
    expect(book_row).to_have_attribute("data-stock", "1")
    book_id = book_row.get_attribute("data-book-id")
    walk.step("librarian registered a title with one copy", book_id=book_id)

    for name, value in (("isbn", "978-0-15-602760-1"), ("title", restock_title), ("author", "Stanisław Lem"), ("copies", "0")):
        form.locator(f"input[name={name}]").fill(value)
    form.locator("button[type=submit]").click()
    restock_row = librarian.locator("#stock-rows tr", has_text=restock_title)
    expect(restock_row).to_have_attribute("data-stock", "0")
    restock_row.locator("input[name=quantity]").fill("0")
    restock_row.locator("button[data-action=add-stock]").click()
    expect(restock_row.locator(".msg.error")).to_contain_text("1 or more")
    restock_row.locator("input[name=quantity]").fill("3")
    restock_row.locator("button[data-action=add-stock]").click()
    expect(restock_row).to_have_attribute("data-stock", "3")
    expect(restock_row.locator(".msg.ok")).to_contain_text("3 in stock")
    walk.shot(librarian, "librarian")
    walk.step("librarian added stock; stock per title shows it")

    # -- alice reserves first, bob second ------------------------------------
    reservations = {}
    pages = {}
    for who in ("alice", "bob"):
        page = walk.open(who)
        walk.sign_in(page, who)
        expect(page.locator("body")).to_have_attribute("data-view", "catalogue")
        card = page.locator(f"li.book[data-book-id='{book_id}']")
        more = page.get_by_role("button", name="Show more titles")
        expect(card.or_(more).first).to_be_visible()
        while not card.count():  # beyond the first page of the catalogue
            more.click()
            expect(card.or_(more).first).to_be_visible()
        expect(card.locator(".book-title")).to_have_text(title)
        card.locator("button[data-action=reserve]").click()
        expect(card.locator(".msg.ok")).to_contain_text("Reserved")
        if who == "alice":
            walk.shot(page, "catalogue")
        walk.goto(page, "mypage")
        row = page.locator("li.reservation", has_text=title)
        expect(row).to_have_count(1)
        expect(page.locator(".live")).to_have_attribute("data-state", "live")
        reservations[who] = row.get_attribute("data-reservation-id")
        pages[who] = page
    alice, bob = pages["alice"], pages["bob"]
    expect(walk.row(alice, reservations["alice"])).to_have_attribute("data-status", "confirmed")
    expect(walk.row(bob, reservations["bob"])).to_have_attribute("data-status", "waitlisted")
    expect(walk.row(bob, reservations["bob"]).locator("button[data-action=cancel]")).to_be_visible()
    expect(walk.row(bob, reservations["bob"]).locator("button[data-action=return]")).to_be_hidden()
    walk.step("alice is confirmed, bob is waitlisted", reservations=reservations)
    markers = {who: walk.mark(page) for who, page in pages.items()}

    # -- the courier ships and delivers; alice's open MyPage follows ---------
    courier = walk.open("courier")
    walk.sign_in(courier, "courier")
    expect(courier.locator("body")).to_have_attribute("data-view", "deliveries")
    to_ship = courier.locator(f"#to-ship li[data-reservation-id='{reservations['alice']}']")
    expect(to_ship).to_have_attribute("data-status", "preparing")
    expect(to_ship.locator(".book-title")).to_have_text(title)
    expect(courier.locator("section.courier")).to_have_attribute("data-loaded", "true")
    walk.shot(courier, "courier")
    to_ship.locator("button[data-action=ship]").click()
    started = time.time()
    walk.wait_status(alice, reservations["alice"], "shipped", started, who="alice")
    expect(walk.row(alice, reservations["alice"])).to_have_attribute("data-delivery-status", "shipped")
    on_the_way = courier.locator(f"#to-deliver li[data-reservation-id='{reservations['alice']}']")
    expect(on_the_way).to_have_attribute("data-status", "shipped")
    on_the_way.locator("button[data-action=deliver]").click()
    started = time.time()
    walk.wait_status(alice, reservations["alice"], "delivered", started, who="alice")
    alice_row = walk.row(alice, reservations["alice"])
    expect(alice_row.locator(".delivery-status")).to_have_text("delivered")
    expect(alice_row.locator("button[data-action=cancel]")).to_be_hidden()
    expect(alice_row.locator("button[data-action=return]")).to_be_visible()
    alice_row.locator("summary").click()
    expect(alice_row.locator(".history li")).to_have_count(4)
    expect(alice_row.locator(".history-status")).to_have_text(["requested", "confirmed", "shipped", "delivered"])
    walk.shot(alice, "mypage-alice")
    walk.assert_not_reloaded(alice, markers["alice"])

    # -- alice returns: bob's open MyPage is promoted -------------------------
    alice_row.locator("button[data-action=return]").click()
    started = time.time()
    expect(alice_row).to_have_attribute("data-status", "returned")
    walk.wait_status(bob, reservations["bob"], "confirmed", started, who="bob")
    walk.assert_not_reloaded(bob, markers["bob"])

    # -- bob cancels ----------------------------------------------------------
    bob_row = walk.row(bob, reservations["bob"])
    bob_row.locator("button[data-action=cancel]").click()
    expect(bob_row).to_have_attribute("data-status", "canceled")
    expect(bob_row.locator(".msg.ok")).to_contain_text("Canceled")
    expect(bob_row.locator("button[data-action=cancel]")).to_be_hidden()
    expect(bob_row.locator(".delivery-status")).to_have_text("canceled", timeout=LIVE_MS + 3000)
    walk.shot(bob, "mypage-bob")
    walk.step("bob canceled")

    # -- the same MyPage at phone width ---------------------------------------
    alice.set_viewport_size(PHONE)
    expect(alice_row).to_have_attribute("data-status", "returned")
    walk.shot(alice, "mypage-alice-phone")
    overflow = alice.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the phone layout scrolls sideways by {overflow}px"
    walk.assert_not_reloaded(alice, markers["alice"])

    for page in (librarian, alice, bob, courier):
        walk.sign_out(page)
    walk.step("everyone signed out")
    walk.check_clean()
    return {"book_id": book_id, "reservations": reservations}


def restart(walk):
    """alice's MyPage stays open across a gateway restart and misses nothing."""
    # The gateway is away for a while: the stream and the fallback polls fail
    # meanwhile, and the browser says so in its console.
    walk.allowed_console.append(re.compile(r"net::ERR_CONNECTION_REFUSED|net::ERR_INCOMPLETE_CHUNKED_ENCODING"
                                           r"|net::ERR_EMPTY_RESPONSE|status of 50[23]"))
    alice = walk.open("alice")
    walk.sign_in(alice, "alice")
    walk.goto(alice, "mypage")
    expect(alice.locator(".live")).to_have_attribute("data-state", "live")
    marker = walk.mark(alice)
    ids = alice.locator("li.reservation").evaluate_all("rows => rows.map(r => [r.dataset.reservationId, r.dataset.status])")
    print(json.dumps({"waiting": "restart", "rows": ids}), flush=True)
    instruction = json.loads(sys.stdin.readline() or "{}")
    walk.step("the gateway was restarted", **instruction)
    reservation_id, status = instruction["reservation_id"], instruction["status"]
    started = time.time()
    expect(walk.row(alice, reservation_id)).to_have_attribute("data-status", status, timeout=15_000)
    expect(alice.locator(".live")).to_have_attribute("data-state", "live", timeout=15_000)
    walk.step("alice's MyPage caught up after the restart", ms=round((time.time() - started) * 1000))
    walk.assert_not_reloaded(alice, marker)
    # ...and is live again: the next change is pushed.
    print(json.dumps({"waiting": "change"}), flush=True)
    instruction = json.loads(sys.stdin.readline() or "{}")
    started = instruction.get("at", time.time())
    walk.wait_status(alice, instruction["reservation_id"], instruction["status"], started, who="alice")
    walk.shot(alice, "mypage-after-restart")
    walk.check_clean()
    return {}


def unavailable(walk):
    """A cancel while the delivery service is down: refused with a 503, said in
    words (try again), and nothing changed; once it is back, the cancel works."""
    walk.allowed_console.append(re.compile(r"status of 503"))
    alice = walk.open("alice")
    walk.sign_in(alice, "alice")
    walk.goto(alice, "mypage")
    expect(alice.locator(".live")).to_have_attribute("data-state", "live")
    print(json.dumps({"waiting": "delivery-down"}), flush=True)
    instruction = json.loads(sys.stdin.readline() or "{}")
    row = walk.row(alice, instruction["reservation_id"])
    expect(row).to_have_attribute("data-status", "confirmed")
    row.locator("button[data-action=cancel]").click()
    message = row.locator(".msg.error")
    expect(message).to_contain_text("try again", timeout=15_000)
    text = message.inner_text()
    assert "{" not in text, f"the error shows JSON: {text}"
    expect(row).to_have_attribute("data-status", "confirmed")
    walk.shot(alice, "mypage-cancel-unavailable")
    walk.step("a cancel while delivery is down says to try again", message=text)
    print(json.dumps({"waiting": "delivery-up"}), flush=True)
    sys.stdin.readline()
    tries = 0
    deadline = time.time() + 20
    while row.get_attribute("data-status") != "canceled":  # as a person would: try again
        assert time.time() < deadline, f"still not canceled after {tries} tries"
        tries += 1
        button = row.locator("button[data-action=cancel]")
        button.click()
        expect(button).to_be_enabled(timeout=15_000)  # the answer has come
        if row.get_attribute("data-status") != "canceled":
            time.sleep(1)
    expect(row.locator(".msg.ok")).to_contain_text("Canceled")
    walk.step("the same cancel works once delivery is back", tries=tries)
    walk.check_clean()
    return {}


def main(argv):
    scenario, base_url, out_dir = argv[1], argv[2], argv[3]
    os.makedirs(out_dir, exist_ok=True)
    result = {"ok": False, "scenario": scenario}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        walk = Walk(browser, base_url, out_dir)
        try:
            result.update({"details": {"story": story, "restart": restart, "unavailable": unavailable}[scenario](walk) or {}, "ok": True})
        except Exception as error:  # the verdict goes to the test, with where it failed
            result["error"] = f"{type(error).__name__}: {error}"
            result["trace"] = traceback.format_exc()[-4000:]
            for index, context in enumerate(browser.contexts):
                for number, page in enumerate(context.pages):
                    try:
                        page.screenshot(path=os.path.join(out_dir, f"failure-{scenario}-{index}-{number}.png"), full_page=True)
                    except Exception:
                        pass
        finally:
            result["steps"] = walk.steps
            result["problems"] = walk.problems
            browser.close()
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
