"""The web app's session in Chromium, as a plain-Python child process
(``nameko test`` patches its own process with eventlet, which Playwright
does not survive): sign in, refresh with the OAuth 2 refresh grant before
the access token expires (on a timer, and before a call), sign out. Prints
one JSON line: the tokens it saw, for test_security_oauth.py to check
against the gateway.

    python tests/security/session_walk.py http://127.0.0.1:PORT
"""
import json
import os
import sys

from playwright.sync_api import sync_playwright

KEY = "bookrental.session"


def saved(page):
    return page.evaluate(f"() => JSON.parse(sessionStorage.getItem('{KEY}') || 'null')")


def wait_for_new_token(page, old, timeout=30_000):
    page.wait_for_function(
        f"old => {{ const s = JSON.parse(sessionStorage.getItem('{KEY}') || 'null'); return s && s.token !== old; }}",
        arg=old, timeout=timeout)
    return saved(page)


def expire_soon(page, seconds):
    """Make the kept access token look ``seconds`` from expiry (the gateway's is still good)."""
    page.evaluate(f"""s => {{ const v = JSON.parse(sessionStorage.getItem('{KEY}'));
        v.expiresAt = Math.floor(Date.now() / 1000) + s; sessionStorage.setItem('{KEY}', JSON.stringify(v)); }}""",
                  seconds)


def main(url):
    seen = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                                             args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(url + "/#/signin")
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", "alice")
        page.click("#signin button[type=submit]")
        page.wait_for_function(f"() => !!sessionStorage.getItem('{KEY}')", timeout=30_000)
        first = saved(page)
        seen["signed_in"] = {"token": first["token"], "refresh_token": first["refreshToken"]}
        # A reloaded tab whose token expires in 62 s refreshes on its timer (60 s before).
        expire_soon(page, 62)
        page.reload()
        second = wait_for_new_token(page, first["token"])
        seen["refreshed_on_time"] = {"token": second["token"], "refresh_token": second["refreshToken"]}
        # A call that finds the token about to expire refreshes first.
        expire_soon(page, 10)
        page.evaluate("() => import('/static/api.js').then(api => api.request('POST', '/mypage/events/ticket'))")
        third = wait_for_new_token(page, second["token"])
        seen["refreshed_before_a_call"] = {"token": third["token"], "refresh_token": third["refreshToken"]}
        page.click("#sign-out")
        page.wait_for_function(f"() => !sessionStorage.getItem('{KEY}')", timeout=30_000)
        page.wait_for_selector("#signin", timeout=30_000)
        browser.close()
    print(json.dumps(seen), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
