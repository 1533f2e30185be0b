"""Driving a running Book Rental from outside, as the benchmark, the soak
and the tests do: a vhost of its own on the shared broker, a free port, an
HTTP client signed in as each of the demo people, an RPC proxy, and a way to
wait for the asynchronous world to settle."""
import contextlib
import os
import socket
import time
import uuid

import requests
from nameko.standalone.rpc import ClusterRpcProxy

from common import isbn

MANAGEMENT = os.environ.get("RABBIT_MANAGEMENT", "http://guest:guest@127.0.0.1:15672")
BROKER = os.environ.get("RABBIT_BROKER", "127.0.0.1:5672")
USER = os.environ.get("RABBIT_USER", "guest:guest")
# The lending limits (SPEC §8) off, for systems whose customers reserve the
# same titles over and over (the benchmark, the soak, tests not about them).
LENDING_LIMITS_OFF = {"MAX_ACTIVE_RESERVATIONS": "0", "ALLOW_SAME_TITLE_TWICE": "true"}


@contextlib.contextmanager
def throwaway_vhost(prefix="bookrental-test"):
    """A vhost of its own, so tests run beside a system started by make up."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    url = f"{MANAGEMENT}/api/vhosts/{name}"
    requests.put(url, timeout=10).raise_for_status()
    user = USER.split(":")[0]
    requests.put(f"{MANAGEMENT}/api/permissions/{name}/{user}",
                 json={"configure": ".*", "write": ".*", "read": ".*"}, timeout=10).raise_for_status()
    try:
        yield f"pyamqp://{USER}@{BROKER}/{name}"
    finally:
        requests.delete(url, timeout=10)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def eventually(check, timeout=15, interval=0.1, message="condition"):
    """Poll ``check`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = check()
            if last:
                return last
        except AssertionError as error:
            last = error
        time.sleep(interval)
    raise AssertionError(f"{message} not reached within {timeout}s (last: {last!r})")


class Client:
    """The HTTP API, as a given user."""

    def __init__(self, base_url, token=None):
        self.base_url = base_url
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    @classmethod
    def signed_in(cls, base_url, username, password=None):
        response = requests.post(f"{base_url}/auth/token",
                                 json={"username": username, "password": password or username}, timeout=10)
        assert response.status_code == 200, response.text
        return cls(base_url, response.json()["access_token"])

    def request(self, method, path, **kwargs):
        kwargs.setdefault("timeout", 15)
        return self.session.request(method, self.base_url + path, **kwargs)

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, json=None, **kwargs):
        return self.request("POST", path, json=json, **kwargs)

    def ok(self, method, path, expected=200, **kwargs):
        response = self.request(method, path, **kwargs)
        assert response.status_code == expected, f"{method} {path}: {response.status_code} {response.text}"
        return response.json()


def isbn13():
    """A valid ISBN-13, most likely unused (one title per ISBN: SPEC §5)."""
    return isbn.with_check_digit(f"978{uuid.uuid4().int % 10 ** 9:09d}")


class Library:
    """The people of the story, signed in to one running system."""

    def __init__(self, base_url):
        self.url = base_url
        self.librarian = Client.signed_in(base_url, "librarian")
        self.alice = Client.signed_in(base_url, "alice")
        self.bob = Client.signed_in(base_url, "bob")
        self.courier = Client.signed_in(base_url, "courier")
        self.anonymous = Client(base_url)

    def new_book(self, copies=1, title=None, author="A. Author"):
        return self.librarian.ok("POST", "/books", 201, json={
            "isbn": isbn13(), "title": title or f"Book {uuid.uuid4().hex[:6]}",
            "author": author, "copies": copies})

    def reserve(self, customer, book_id, **kwargs):
        return customer.ok("POST", "/reservations", 202, json={"book_id": book_id}, **kwargs)

    def status(self, reservation_id, customer=None):
        return (customer or self.librarian).ok("GET", f"/reservations/{reservation_id}")["status"]

    def wait_status(self, reservation_id, status, timeout=15):
        eventually(lambda: self.status(reservation_id) == status, timeout, message=f"{reservation_id} {status}")

    def delivery_for(self, reservation_id, timeout=15):
        def find():
            return next((d for d in self.all_deliveries() if d["reservation_id"] == reservation_id), None)

        return eventually(find, timeout, message=f"delivery of {reservation_id}")

    def all_deliveries(self, status=None):
        items, cursor = [], None
        while True:
            params = {"limit": 500, **({"cursor": cursor} if cursor else {}), **({"status": status} if status else {})}
            page = self.courier.ok("GET", "/deliveries", params=params)
            items += page["items"]
            cursor = page["next"]
            if cursor is None:
                return items

    def mypage(self, customer):
        """Every row of the customer's MyPage (all its pages), by reservation id."""
        rows, cursor = {}, None
        while True:
            page = customer.ok("GET", "/mypage", params={"limit": 500, **({"cursor": cursor} if cursor else {})})
            rows.update((row["reservation_id"], row) for row in page["reservations"])
            cursor = page["next"]
            if cursor is None:
                return rows


def rpc(amqp_uri, timeout=10):
    return ClusterRpcProxy({"AMQP_URI": amqp_uri}, timeout=timeout)
