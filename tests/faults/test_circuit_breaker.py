"""The circuit breaker between reservation and delivery, on real processes:
it opens after CIRCUIT_FAIL_MAX failed cancels, then fails fast without
changing anything, shows in health, and closes again once delivery is back."""
import time

import pytest

from chaos import health, new_customer, settle

pytestmark = pytest.mark.e2e


def circuit(system):
    return health(system.amqp_uri, "reservation")["circuits"]["delivery"]["state"]


def test_the_breaker_opens_fails_fast_and_recovers(system, library):
    fail_max = int(system.config["CIRCUIT_FAIL_MAX"])
    reset_timeout = float(system.config["CIRCUIT_RESET_TIMEOUT"])
    customer = new_customer(library)
    book = library.new_book(copies=fail_max + 2)
    reservations = [library.reserve(customer, book["id"])["id"] for _ in range(fail_max + 2)]
    for rid in reservations:
        library.wait_status(rid, "confirmed")
        library.delivery_for(rid)
    assert circuit(system) == "closed"

    system.stop("delivery")
    try:
        for rid in reservations[:fail_max]:  # each waits CANCEL_TIMEOUT, then 503
            response = customer.post(f"/reservations/{rid}/cancel")
            assert response.status_code == 503, response.text
        opened_at = time.time()
        assert circuit(system) == "open"
        ready = library.anonymous.ok("GET", "/health/ready")
        assert ready["checks"]["reservation"]["circuits"]["delivery"]["state"] == "open"

        # Open: the cancel fails at once, and says so.
        started = time.perf_counter()
        response = customer.post(f"/reservations/{reservations[fail_max]}/cancel")
        elapsed = time.perf_counter() - started
        assert response.status_code == 503, response.text
        assert elapsed < 0.3, f"an open circuit took {elapsed:.3f}s to answer"
        assert int(response.headers["Retry-After"]) > 0
        assert response.json()["error"]["code"] == "unavailable"
        assert "not trying" in response.json()["error"]["message"]
        assert all(library.status(rid) == "confirmed" for rid in reservations)
    finally:
        system.start("delivery")

    # Still open until the reset timeout has passed, then one trial call
    # (half-open) goes through, succeeds, and closes the circuit.
    time.sleep(max(0.0, opened_at + reset_timeout + 0.2 - time.time()))
    canceled = customer.ok("POST", f"/reservations/{reservations[fail_max]}/cancel")
    assert canceled["status"] == "canceled"
    assert circuit(system) == "closed"
    customer.ok("POST", f"/reservations/{reservations[0]}/cancel")

    # The cancels refused while delivery was down changed nothing, even
    # now that delivery is back (their requests expired in the queue).
    assert library.delivery_for(reservations[1])["status"] == "preparing"
    assert library.delivery_for(reservations[0])["status"] == "canceled"
    with open(system.logfile("reservation")) as log:
        text = log.read()
    assert "circuit to delivery is open" in text and "circuit to delivery is closed" in text
    settle(system, library, [book["id"]], reservations, {customer.username: customer})
