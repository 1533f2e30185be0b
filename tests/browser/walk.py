"""Walk the web app in a real browser (Debian's Chromium, driven by Playwright).

    python tests/browser/walk.py <scenario> <gateway_url> <out_dir> [<params as JSON>]

with scenario one of story, restart, unavailable, audit, keyboard, errors,
preview, profile, notices, search, renew, older, address, trace (see each function below).

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

import audit as checks


def typed_isbn():
    """A valid ISBN-13 as a librarian types it, with hyphens (978-0-...-c)."""
    digits = [9, 7, 8, 0] + [int(d) for d in f"{uuid.uuid4().int % 10 ** 8:08d}"]
    check = (10 - sum(d * (3 if i % 2 else 1) for i, d in enumerate(digits)) % 10) % 10
    text = "".join(map(str, digits))
    return f"{text[:3]}-{text[3]}-{text[4:8]}-{text[8:]}-{check}"

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

    def open(self, who, viewport=DESKTOP, clock=False, path="/"):
        context = self.browser.new_context(viewport=viewport, base_url=self.base)
        page = context.new_page()
        if clock:  # the page's timers run only when the walk says so
            page.clock.install()
        page.set_default_timeout(10_000)
        page.on("pageerror", lambda error: self.problems.append(f"{who}: page error: {error}"))

        def console(message):
            if message.type == "error" and not any(p.search(message.text) for p in self.allowed_console):
                self.problems.append(f"{who}: console error: {message.text}")

        page.on("console", console)
        page.goto(path)
        if path != "about:blank":
            expect(page.locator("html")).to_have_attribute("data-features", re.compile(".*"))
        return page

    def shot(self, page, name):
        path = os.path.join(self.out, f"{name}.png")
        page.screenshot(path=path, full_page=True)
        return path

    def readme_shot(self, page, name):
        """The window as a person sees it at desktop width, for the README
        (`make screenshots` copies out_dir/readme/*.png into docs/screenshots/)."""
        os.makedirs(os.path.join(self.out, "readme"), exist_ok=True)
        page.mouse.move(0, 0)  # no hover effect in the picture
        page.evaluate("() => document.activeElement && document.activeElement.blur()")
        page.screenshot(path=os.path.join(self.out, "readme", f"{name}.png"), full_page=False)

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
    def loaded(page):
        """Wait until the page on screen has its first answer from the API."""
        expect(page.locator("#main > section.view")).to_have_attribute("data-loaded", "true")

    @staticmethod
    def offers(page, feature):
        """Whether the web app found ``feature`` in the gateway's API (features.js)."""
        return feature in (page.locator("html").get_attribute("data-features") or "").split()

    @staticmethod
    def no_json(locator):
        text = locator.inner_text()
        assert "{" not in text and "\"" not in text, f"a message shows JSON: {text!r}"
        return text

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
        expect(row.locator(".badge.status")).to_have_text(status)
        return took

    def check_clean(self):
        assert not self.problems, "; ".join(self.problems)


def story(walk):
    title = f"The Left Hand of Darkness {uuid.uuid4().hex[:6]}"
    isbn, restock_isbn = typed_isbn(), typed_isbn()  # one title per ISBN: new ones each walk
    restock_title = f"Solaris {uuid.uuid4().hex[:6]}"

    # -- a wrong password is said in words --------------------------------
    stranger = walk.open("stranger")
    walk.readme_shot(stranger, "signin")
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
    for name, value in (("isbn", isbn), ("title", title), ("author", "Ursula K. Le Guin"), ("copies", "1")):
        form.locator(f"input[name={name}]").fill(value)
    form.locator("button[type=submit]").click()
    expect(form.locator(".msg")).to_contain_text("Registered")
    book_row = librarian.locator("#stock-rows tr", has_text=title)
    expect(book_row).to_have_attribute("data-stock", "1")
    book_id = book_row.get_attribute("data-book-id")
    walk.step("librarian registered a title with one copy", book_id=book_id)

    for name, value in (("isbn", restock_isbn), ("title", restock_title), ("author", "Stanisław Lem"), ("copies", "0")):
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
    walk.readme_shot(librarian, "librarian-stock")
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
            walk.readme_shot(page, "customer-catalogue")
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
    walk.readme_shot(courier, "courier-deliveries")
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
    walk.readme_shot(alice, "customer-mypage")
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


# -- every page: fits, accessible (tests/browser/audit.py) ----------------------

# Each role's pages, and what the web app must offer for each to be there.
PAGES = {
    "customer": ("alice", [("catalogue", None), ("mypage", None), ("notices", "notifications"), ("profile", "account")]),
    "librarian": ("librarian", [("stock", None), ("catalogue", None)]),
    "courier": ("courier", [("deliveries", None)]),
}


def audit(walk, params):
    """Every page of every role (and signed out) at 360, 1200 and 1920
    pixels: nothing beyond the right edge, no sideways scrolling, no axe-core
    violation; a screenshot of each in out_dir/<who>-<page>-<width>.png.
    The test has filled the library with what is hardest to lay out."""
    audit = checks.Audit(walk.out)
    visitor = walk.open("visitor")
    expect(visitor.locator("form#signin")).to_be_visible()
    audit.page(visitor, "signin")
    visitor.fill("input[name=username]", "alice")
    visitor.fill("input[name=password]", "not-her-password")
    visitor.locator("form#signin button[type=submit]").click()
    expect(visitor.locator("#signin-message")).to_contain_text("Wrong username or password")
    audit.page(visitor, "signin-refused", widths=(360,))
    walk.goto(visitor, "catalogue")
    walk.loaded(visitor)
    audit.page(visitor, "visitor-catalogue")
    skipped = []
    for role, (who, routes) in PAGES.items():
        page = walk.open(who)
        walk.sign_in(page, who)
        for route, feature in routes:
            if feature and not walk.offers(page, feature):
                skipped.append(route)
                continue
            walk.goto(page, route)
            walk.loaded(page)
            if route == "mypage":
                expect(page.locator("li.reservation").first).to_be_visible()
                page.locator("li.reservation details").first.evaluate("(d) => { d.open = true; }")
            if route == "deliveries":
                expect(page.locator("#to-ship li.delivery").first).to_be_visible()
            audit.page(page, f"{role}-{route}")
            walk.step(f"{role}'s {route} audited", problems=len(audit.problems))
        page.context.close()
    walk.check_clean()
    assert not audit.problems, f"{len(audit.problems)} problems:\n" + "\n".join(audit.problems)
    walk.step("time spent", **{kind: round(seconds, 1) for kind, seconds in audit.seconds.items()})
    return {"checked": audit.checked, "not_offered": skipped, "seconds": audit.seconds}


# -- the keyboard alone -----------------------------------------------------------

def keyboard(walk, params):
    """alice signs in, reserves and cancels with Tab, Enter and Space only.
    At every stop the focus is visible, and after each action it lands on
    something that makes sense (never back on the page itself)."""
    book_id, title = params["book_id"], params["title"]
    page = walk.open("alice-keyboard")

    def at(selector, why):
        where = checks.focused(page)
        problem = checks.focus_problem(where)
        assert problem is None, f"{why}: {problem}"
        assert page.evaluate("(s) => document.activeElement.matches(s)", selector), \
            f"{why}: the focus is on {where['element']} ({where['text']!r}), not {selector}"
        walk.step(f"focus: {why}", element=where["element"])

    # Signing in: the form takes the focus; Tab moves on; Enter sends it.
    expect(page.locator("form#signin")).to_be_visible()
    at("#signin-username", "the sign-in page starts in the username field")
    page.keyboard.type("alice")
    checks.tab_to(page, "#signin-password", limit=3)
    page.keyboard.type("alice")
    page.keyboard.press("Enter")
    expect(page.locator("#who-name")).to_have_text("alice")
    expect(page.locator("body")).to_have_attribute("data-view", "catalogue")
    at("#catalogue-title", "after signing in, the catalogue's heading")

    # A reload starts at the top: the first Tab offers to skip the menu.
    page.reload()
    walk.loaded(page)
    checks.tab_to(page, "#skip", limit=1)
    page.keyboard.press("Enter")
    at("#catalogue-title", "the skip link leads to the page's heading")

    # Reserve, with Enter.
    card = f"li.book[data-book-id='{book_id}']"
    expect(page.locator(card)).to_be_visible()
    presses = checks.tab_to(page, f"{card} button[data-action=reserve]", limit=150)
    page.keyboard.press("Enter")
    expect(page.locator(f"{card} .msg.ok")).to_contain_text("Reserved")
    at(f"{card} button[data-action=reserve]", "after reserving, still on the Reserve button")
    walk.step("reserved with the keyboard", tabs=presses)

    # The confirmation links to MyPage: the next Tab, then Enter.
    checks.tab_to(page, f"{card} .msg a[href='#/mypage']", limit=2)
    page.keyboard.press("Enter")
    expect(page.locator("body")).to_have_attribute("data-view", "mypage")
    at("#mypage-title", "MyPage opens at its heading")
    row = page.locator("li.reservation", has_text=title)
    expect(row).to_have_count(1)
    reservation_id = row.get_attribute("data-reservation-id")
    expect(row).to_have_attribute("data-status", re.compile("confirmed|waitlisted|requested"))

    # Cancel, with Space: the button goes away, the focus goes to the reservation's title.
    row_css = f"li.reservation[data-reservation-id='{reservation_id}']"
    checks.tab_to(page, f"{row_css} button[data-action=cancel]", limit=60)
    page.keyboard.press("Space")
    expect(row).to_have_attribute("data-status", "canceled")
    expect(row.locator(".msg.ok")).to_contain_text("Canceled")
    at(f"#reservation-{reservation_id}-title", "after canceling, the reservation's title")
    walk.shot(page, "keyboard-canceled")

    # Sign out: back through the page to the button, Enter.
    checks.tab_to(page, "#sign-out", limit=60, backwards=True)
    page.keyboard.press("Enter")
    expect(page.locator("#signin-message")).to_contain_text("signed out")
    at("#signin-username", "after signing out, the username field")
    walk.check_clean()
    return {"reservation_id": reservation_id}


# -- errors, in words ------------------------------------------------------------

def errors(walk, params):
    """An expired sign-in (by the clock, or refused by the gateway) returns
    to the sign-in page, says so, and signing in again goes back to the page
    the person was on; a 409 is said in words."""
    # Run out by the clock: the next step goes to the sign-in page. (A session
    # with a refresh token is refreshed instead, so this one has none left.)
    alice = walk.open("alice")
    walk.sign_in(alice, "alice")
    walk.goto(alice, "mypage")
    walk.loaded(alice)
    alice.evaluate("""() => {
        const saved = JSON.parse(sessionStorage.getItem("bookrental.session"));
        saved.expiresAt = Math.floor(Date.now() / 1000) - 5;
        saved.refreshToken = null;
        sessionStorage.setItem("bookrental.session", JSON.stringify(saved));
    }""")
    alice.click("#nav a[href='#/catalogue']")
    expect(alice.locator("form#signin")).to_be_visible()
    said = walk.no_json(alice.locator("#signin-message"))
    assert "expired" in said, said
    walk.step("a sign-in that ran out returns to the sign-in page", message=said)
    walk.sign_in(alice, "alice")
    expect(alice.locator("body")).to_have_attribute("data-view", "catalogue")

    # Refused by the gateway (a token it no longer accepts): the same.
    walk.loaded(alice)
    alice.evaluate("""() => {
        const saved = JSON.parse(sessionStorage.getItem("bookrental.session"));
        saved.token = saved.token.slice(0, -6) + (saved.token.endsWith("AAAAAA") ? "BBBBBB" : "AAAAAA");
        sessionStorage.setItem("bookrental.session", JSON.stringify(saved));
    }""")
    alice.click("#nav a[href='#/mypage']")  # GET /mypage with the refused token: 401
    expect(alice.locator("form#signin")).to_be_visible()
    said = walk.no_json(alice.locator("#signin-message"))
    assert "expired" in said, said
    walk.sign_in(alice, "alice")
    expect(alice.locator("body")).to_have_attribute("data-view", "mypage")
    walk.step("a refused sign-in returns to the sign-in page, and back to MyPage after", message=said)

    # A 409: the courier's page is out of date (another courier shipped it).
    # (The browser logs the answer it was given; the page handles it.)
    walk.allowed_console.append(re.compile(r"status of 409"))
    courier = walk.open("courier", clock=True)  # no refresh by itself meanwhile
    walk.sign_in(courier, "courier")
    card = courier.locator(f"#to-ship li[data-delivery-id='{params['delivery_id']}']")
    expect(card).to_be_visible()
    print(json.dumps({"waiting": "ship-behind-its-back"}), flush=True)
    sys.stdin.readline()
    card.locator("button[data-action=ship]").click()
    message = card.locator(".msg.error")
    expect(message).not_to_be_empty()
    said = walk.no_json(message)
    walk.shot(courier, "courier-409")
    walk.step("a 409 is said in words", message=said)
    walk.check_clean()
    return {"conflict": said}


# -- the screens whose API comes with other issues (skipped without it) -------------

def profile(walk, params):
    """alice sees her email and address, is told next to the field what is
    wrong, and saves a new address that is there after a reload."""
    alice = walk.open("alice")
    walk.sign_in(alice, "alice")
    walk.goto(alice, "profile")
    walk.loaded(alice)
    email, address = alice.locator("#profile-email"), alice.locator("#profile-address")
    expect(email).to_have_value(params["email"])
    email.fill("not an email")
    alice.locator("form#profile button[type=submit]").click()
    expect(alice.locator("#profile-email-error")).to_contain_text("email address")
    expect(email).to_be_focused()
    expect(email).to_have_attribute("aria-invalid", "true")
    email.fill(params["email"] or "alice@example.org")
    address.fill(params["address"])
    alice.locator("form#profile button[type=submit]").click()
    expect(alice.locator("#profile-message")).to_contain_text("Saved")
    expect(alice.locator("#profile-email-error")).to_be_empty()
    alice.reload()
    walk.loaded(alice)
    expect(address).to_have_value(params["address"])
    checks.Audit(walk.out).page(alice, "customer-profile-saved", widths=(360,))
    walk.check_clean()
    return {}


def notices(walk, params):
    """The notice of a confirmed reservation is listed, newest first."""
    alice = walk.open("alice")
    walk.sign_in(alice, "alice")
    walk.goto(alice, "notices")
    walk.loaded(alice)
    item = alice.locator(f"li.notice[data-reservation-id='{params['reservation_id']}']")
    expect(item.first).to_be_visible()
    expect(item.first).to_have_attribute("data-kind", "confirmed")
    walk.check_clean()
    return {}


def search(walk, params):
    """A search keeps the titles whose title, author or ISBN has the words, in any case."""
    alice = walk.open("alice")
    walk.sign_in(alice, "alice")
    walk.loaded(alice)
    box = alice.locator("#catalogue-q")
    box.fill(params["query"].upper())
    box.press("Enter")
    cards = alice.locator("#books li.book")
    expect(cards).to_have_count(1)
    expect(cards.first).to_have_attribute("data-book-id", str(params["book_id"]))
    box.fill("no title has these words " + params["query"])
    box.press("Enter")
    expect(cards).to_have_count(0)
    expect(alice.locator(".catalogue .empty")).to_be_visible()
    walk.check_clean()
    return {}


def renew(walk, params):
    """A loan shows its due date; Renew moves it later."""
    alice = walk.open("alice")
    walk.sign_in(alice, "alice")
    walk.goto(alice, "mypage")
    row = walk.row(alice, params["reservation_id"])
    expect(row).to_have_attribute("data-status", "delivered")
    due = row.locator("dd.due time")
    expect(due).to_be_visible()
    before = due.get_attribute("datetime")
    row.locator("button[data-action=renew]").click()
    expect(row.locator(".msg.ok")).to_contain_text("Renewed")
    expect(due).not_to_have_attribute("datetime", before)
    walk.check_clean()
    return {"due_before": before, "due_after": due.get_attribute("datetime")}


def older(walk, params):
    """MyPage a page at a time: "Show older" until every reservation is there."""
    alice = walk.open("alice")
    walk.sign_in(alice, "alice")
    alice.goto("/#/mypage?limit=2")
    walk.loaded(alice)
    rows = alice.locator("li.reservation")
    expect(rows).to_have_count(2)
    button = alice.locator("#mypage-older")
    clicks = 0
    while button.is_visible():
        shown = rows.count()
        button.click()
        expect(rows).not_to_have_count(shown)
        clicks += 1
        assert clicks < 200, "Show older never ends"
    ids = rows.evaluate_all("rows => rows.map(r => r.dataset.reservationId)")
    assert len(ids) == len(set(ids)), "a reservation is shown twice"
    missing = set(params["reservation_ids"]) - set(ids)
    assert not missing, f"not shown after {clicks} pages: {missing}"
    walk.check_clean()
    return {"pages": clicks + 1, "rows": len(ids)}


def address(walk, params):
    """The courier sees where each delivery goes."""
    courier = walk.open("courier")
    walk.sign_in(courier, "courier")
    card = courier.locator(f"li.delivery[data-reservation-id='{params['reservation_id']}']")
    expect(card.locator(".address-text")).to_have_text(params["address"])
    walk.check_clean()
    return {}


# -- the new screens on SPEC-shaped answers, before their routes are here -----------

# What SPEC §5 says the routes of the other issues answer; the gateway's own
# answers are used for everything else (and extended with the new fields).
STUB_ACCOUNT = {"username": "alice", "role": "customer", "email": "alice@example.org",
                "address": "Flat 4, 1 Rue des Lilas\n75020 Paris"}
STUB_NOTICES = [
    {"id": "n3", "kind": "overdue", "reservation_id": None, "subject": "“" + "W" * 120 + "” is overdue",
     "sent_at": "2026-05-03T09:00:00Z"},
    {"id": "n2", "kind": "due_soon", "reservation_id": None, "subject": "Solaris is due back in 2 days",
     "sent_at": "2026-05-01T09:00:00Z"},
    {"id": "n1", "kind": "confirmed", "reservation_id": None, "subject": "Your copy of Solaris is set aside",
     "sent_at": "2026-04-17T09:00:00Z"},
]


def spec_shaped(context):
    """Answer the routes this gateway lacks as SPEC §5 shapes them, and add
    the new fields to the answers it has (on one browser context)."""
    def openapi(route):
        doc = route.fetch().json()
        paths = doc["paths"]
        paths["/account"] = {"get": {"responses": {}}, "patch": {"responses": {}}}
        paths["/notifications"] = {"get": {"responses": {}}}
        paths["/reservations/{reservation_id}/renew"] = {"post": {"responses": {}}}
        for path in ("/books", "/mypage"):
            paths[path]["get"].setdefault("parameters", []).extend(
                [{"in": "query", "name": "q"}] if path == "/books" else [{"in": "query", "name": "limit"}])
        route.fulfill(json=doc)

    def account(route):
        if route.request.method == "PATCH":
            body = route.request.post_data_json or {}
            if "@" not in (body.get("email") or "@"):
                return route.fulfill(status=400, json={"error": {"code": "bad_request", "message": "The request is not valid.",
                                                                 "details": {"email": ["Not a valid email address."]}}})
            STUB_ACCOUNT.update(body)
        route.fulfill(json=STUB_ACCOUNT)

    def notifications(route):
        route.fulfill(json={"items": STUB_NOTICES, "next": None})

    def books(route):
        url = route.request.url
        query = re.search(r"[?&]q=([^&]*)", url)
        if not query:
            return route.continue_()
        from urllib.parse import unquote_plus
        word = unquote_plus(query.group(1)).lower()
        answer = route.fetch(url=re.sub(r"([?&])q=[^&]*&?", r"\1", url)).json()
        answer["items"] = [b for b in answer["items"] if word in f"{b['title']} {b['author']} {b['isbn']}".lower()]
        route.fulfill(json=answer)

    def mypage(route):
        if "cursor=" in route.request.url:  # the older page: one more row
            return route.fulfill(json={"customer": "alice", "next": None, "reservations": []})
        answer = route.fetch(url=re.sub(r"[?&]limit=\d+", "", route.request.url)).json()
        delivered = 0
        for row in answer["reservations"]:
            row.setdefault("due_at", None)
            row.setdefault("overdue", False)
            row.setdefault("queue_position", None)
            if row["status"] == "delivered":  # the first loan is overdue, the others not
                row.update(due_at="2026-05-14T10:00:00Z", overdue=delivered == 0)
                delivered += 1
            if row["status"] == "waitlisted":
                row["queue_position"] = 2
        answer["next"] = "2"
        route.fulfill(json=answer)

    def deliveries(route):
        answer = route.fetch().json()
        for index, item in enumerate(answer["items"]):
            item.setdefault("address", [None, "Flat 4, 1 Rue des Lilas\n75020 Paris", "Q" * 300][index % 3])
        route.fulfill(json=answer)

    context.route("**/openapi.json", openapi)
    context.route(re.compile(r".*/account$"), account)
    context.route(re.compile(r".*/notifications(\?.*)?$"), notifications)
    context.route(re.compile(r".*/books\?.*"), books)
    context.route(re.compile(r".*/mypage(\?.*)?$"), mypage)
    context.route(re.compile(r".*/deliveries\?.*"), deliveries)


def preview(walk, params):
    """The screens whose routes come with other issues, on answers shaped as
    SPEC §5 says (see spec_shaped): they fit, pass axe-core, and behave."""
    audit = checks.Audit(walk.out)
    alice = walk.open("alice", path="about:blank")
    spec_shaped(alice.context)
    alice.goto("/")
    walk.sign_in(alice, "alice")
    for feature in ("account", "notifications", "search", "renew", "mypagePaging"):
        assert walk.offers(alice, feature), f"the app did not see {feature}"
    # The catalogue's search box.
    walk.loaded(alice)
    alice.fill("#catalogue-q", params["query"].upper())
    alice.press("#catalogue-q", "Enter")
    expect(alice.locator("#books li.book")).to_have_count(1)
    audit.page(alice, "preview-customer-catalogue-search")
    # MyPage: due date, overdue, place in line, Renew, Show older.
    walk.goto(alice, "mypage")
    walk.loaded(alice)
    expect(alice.locator("li.reservation dd.due time").first).to_be_visible()
    expect(alice.locator("li.reservation[data-overdue=true] .badge.overdue").first).to_be_visible()
    expect(alice.locator("li.reservation[data-status=waitlisted] dd.queue-position").first).to_have_text("2nd in line")
    expect(alice.locator("li.reservation[data-status=delivered][data-overdue=false] button[data-action=renew]").first).to_be_visible()
    expect(alice.locator("#mypage-older")).to_be_visible()
    audit.page(alice, "preview-customer-mypage")
    alice.click("#mypage-older")
    expect(alice.locator("#mypage-older")).to_be_hidden()
    # Notices.
    walk.goto(alice, "notices")
    walk.loaded(alice)
    expect(alice.locator("li.notice")).to_have_count(len(STUB_NOTICES))
    audit.page(alice, "preview-customer-notices")
    # Profile: an error next to its field, then saved.
    walk.goto(alice, "profile")
    walk.loaded(alice)
    expect(alice.locator("#profile-email")).to_have_value(STUB_ACCOUNT["email"])
    alice.fill("#profile-email", "alice.example.org")
    alice.click("form#profile button[type=submit]")
    expect(alice.locator("#profile-email-error")).to_contain_text("email address")
    audit.page(alice, "preview-customer-profile-error")
    alice.fill("#profile-email", "alice@example.org")
    alice.fill("#profile-address", "2 Rue des Lilas\n75020 Paris")
    alice.click("form#profile button[type=submit]")
    expect(alice.locator("#profile-message")).to_contain_text("Saved")
    assert STUB_ACCOUNT["address"] == "2 Rue des Lilas\n75020 Paris", STUB_ACCOUNT
    # The courier: where each delivery goes.
    courier = walk.open("courier", path="about:blank")
    spec_shaped(courier.context)
    courier.goto("/")
    walk.sign_in(courier, "courier")
    expect(courier.locator("li.delivery .address").first).to_be_visible()
    audit.page(courier, "preview-courier-deliveries")
    walk.check_clean()
    assert not audit.problems, f"{len(audit.problems)} problems:\n" + "\n".join(audit.problems)
    return {"checked": audit.checked}


def trace(walk, params):
    """The librarian traces a reservation with the keyboard alone: Tab to the
    id, type it, Enter; its events, in the log's order, in a table that fits
    every window and passes axe-core; a malformed id and an unknown one are
    said in words; #/trace/<id> opens it again."""
    walk.allowed_console.append(re.compile(r"status of 404"))  # the unknown reservation, handled
    audit = checks.Audit(walk.out)
    page = walk.open("librarian-trace")
    walk.sign_in(page, "librarian")
    walk.goto(page, "trace")
    checks.tab_to(page, "#trace-id", limit=5)
    page.keyboard.type("not-a-reservation")
    page.keyboard.press("Enter")
    expect(page.locator("#trace-id-error")).to_contain_text("not a reservation id")
    expect(page.locator("#trace-id")).to_be_focused()
    page.keyboard.press("Control+A")
    page.keyboard.type(str(uuid.uuid4()))
    page.keyboard.press("Enter")
    said = walk.no_json(page.locator("#trace-message.error"))
    expect(page.locator("#trace-id")).to_be_focused()
    walk.step("an unknown reservation is said in words", message=said)

    page.keyboard.press("Control+A")
    page.keyboard.type(params["reservation_id"])
    page.keyboard.press("Enter")
    rows = page.locator("#trace-rows tr")
    expect(rows).to_have_count(len(params["event_types"]))
    shown = [rows.nth(n).get_attribute("data-event-type") for n in range(rows.count())]
    assert shown == params["event_types"], shown
    expect(page.locator("#trace-result-title")).to_be_focused()
    expect(page.locator("#trace-summary")).to_contain_text(f"{len(shown)} events")
    walk.step("the reservation's events, in order", events=len(shown))
    audit.page(page, "librarian-trace")
    walk.readme_shot(page, "librarian-trace")

    again = walk.open("librarian-link")
    walk.sign_in(again, "librarian")
    again.goto(f"/#/trace/{params['reservation_id']}")
    expect(again.locator("#trace-rows tr")).to_have_count(len(shown))
    walk.check_clean()
    assert not audit.problems, f"{len(audit.problems)} problems:\n" + "\n".join(audit.problems)
    return {"checked": audit.checked}


SCENARIOS = {name: function for name, function in globals().items()
             if name in ("story", "restart", "unavailable", "audit", "keyboard", "errors",
                         "profile", "notices", "search", "renew", "older", "address", "preview", "trace")}


def main(argv):
    scenario, base_url, out_dir = argv[1], argv[2], argv[3]
    params = json.loads(argv[4]) if len(argv) > 4 else {}
    os.makedirs(out_dir, exist_ok=True)
    for name in os.listdir(out_dir):  # an earlier failure's pictures would mislead
        if name.startswith(f"failure-{scenario}-"):
            os.remove(os.path.join(out_dir, name))
    result = {"ok": False, "scenario": scenario}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        walk = Walk(browser, base_url, out_dir)
        try:
            function = SCENARIOS[scenario]
            details = function(walk, params) if function.__code__.co_argcount == 2 else function(walk)
            result.update({"details": details or {}, "ok": True})
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
