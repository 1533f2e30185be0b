"""Prometheus metrics of a running system (common/metrics.py).

The gateway serves GET /metrics on its own port, every backend process on a
port of its own that ops/run.py picks and lists in
var/run/prometheus/targets.json."""
import json
import os

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from helpers import eventually
from ops.run import BACKENDS

pytestmark = pytest.mark.e2e


def scrape(address):
    response = requests.get(f"http://{address}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return samples(response.text)


def samples(text):
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def value(found, name, **labels):
    matching = [v for sample_labels, v in found.get(name, []) if labels.items() <= sample_labels.items()]
    return sum(matching) if matching else None


def gateway_address(system):
    return system.gateway_url.split("//", 1)[1]


def test_the_gateway_counts_every_request_by_its_route_template_404s_included(system, library):
    book = library.new_book(copies=1)
    library.anonymous.ok("GET", f"/books/{book['id']}")
    assert library.anonymous.get("/books/2147483000").status_code == 404  # a route, and no such book
    assert library.anonymous.get(f"/no/such/{book['id']}").status_code == 404  # no route at all
    assert library.alice.post("/books", json={}).status_code == 403

    found = scrape(gateway_address(system))
    requests_total = {(labels["method"], labels["route"], labels["status"])
                      for labels, _ in found["bookrental_http_requests_total"]}
    assert {("GET", "/books/{book_id}", "200"), ("GET", "/books/{book_id}", "404"),
            ("GET", "(unmatched)", "404"), ("POST", "/books", "403"), ("POST", "/books", "201")} <= requests_total
    routes = {route for _, route, _ in requests_total}
    assert not any(str(book["id"]) in route or "/no/such" in route for route in routes), routes
    assert value(found, "bookrental_http_request_duration_seconds_count", route="/books/{book_id}") >= 2
    assert value(found, "bookrental_http_requests_in_flight") >= 1  # this scrape
    # The gateway's own workers, by entrypoint.
    assert value(found, "bookrental_worker_calls_total", service="gateway", entrypoint="register_book",
                 outcome="ok") >= 1


def test_every_backend_serves_its_metrics_on_its_own_port(system, library):
    book = library.new_book(copies=1)
    reservation = library.reserve(library.bob, book["id"])
    library.wait_status(reservation["id"], "confirmed")
    library.delivery_for(reservation["id"])

    addresses = system.metrics_addresses()
    with open(os.path.join(system.state_dir, "run", "prometheus", "targets.json")) as handle:
        targets = json.load(handle)
    assert sorted((t["labels"]["service"], t["targets"][0]) for t in targets) == \
        sorted((service, address) for (service, _), address in addresses.items())
    handled = {"product": "reservation_requested", "reservation": "copy_allocated",
               "delivery": "reservation_confirmed", "mypage": "reservation_confirmed",
               "notification": "reservation_confirmed"}
    for service in BACKENDS:
        found = scrape(addresses[(service, 1)])
        assert value(found, "bookrental_events_handled_total", service=service, event_type=handled[service],
                     outcome="applied") >= 1, service
        assert value(found, "bookrental_worker_duration_seconds_count", service=service, kind="event") >= 1
        assert value(found, "bookrental_worker_calls_total", service=service, entrypoint="health") >= 1
        # The relay marks what was confirmed at most every OutboxRelay.mark_every seconds.
        eventually(lambda: value(scrape(addresses[(service, 1)]), "bookrental_outbox_backlog", service=service) == 0,
                   timeout=5, message=f"{service}'s outbox backlog at 0")
        assert value(found, "process_resident_memory_bytes") > 0
    found = scrape(addresses[("reservation", 1)])
    assert value(found, "bookrental_outbox_published_total", service="reservation") >= 1
    assert value(found, "bookrental_circuit_state", service="reservation", target="delivery") == 0


def test_an_open_circuit_and_a_refused_rpc_show_in_the_metrics(system, library):
    book = library.new_book(copies=1)
    reservation = library.reserve(library.alice, book["id"])
    library.wait_status(reservation["id"], "confirmed")
    address = system.metrics_addresses("reservation")[("reservation", 1)]
    system.stop("delivery")
    try:
        for _ in range(3):  # CIRCUIT_FAIL_MAX calls that find delivery unavailable
            assert library.alice.post(f"/reservations/{reservation['id']}/cancel").status_code == 503
        # A worker's metrics are recorded just after its answer is sent.
        eventually(lambda: value(scrape(address), "bookrental_worker_calls_total", service="reservation",
                                 entrypoint="cancel", outcome="unavailable") >= 3, timeout=5)
        found = scrape(address)
        assert value(found, "bookrental_circuit_state", service="reservation", target="delivery") == 2
    finally:
        system.start("delivery")
    eventually(lambda: library.alice.post(f"/reservations/{reservation['id']}/cancel").status_code == 200,
               timeout=20, interval=0.5)
    found = scrape(address)
    assert value(found, "bookrental_circuit_state", service="reservation", target="delivery") == 0
    gateway = scrape(gateway_address(system))
    assert value(gateway, "bookrental_http_requests_total", route="/reservations/{reservation_id}/cancel",
                 status="503") >= 3
