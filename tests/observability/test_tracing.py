"""Following one request by its id (docs/operations.md, "Follow a request").

The gateway takes the caller's ``X-Request-ID`` (or makes one), answers
with it, logs the request under it, and passes it as the correlation id of
every RPC call and event the request causes; every service logs one JSON
line per thing it does, with that id and its own name."""
import glob
import json
import os
import uuid

import pytest
import requests

from helpers import eventually
from ops.run import SERVICES

pytestmark = pytest.mark.e2e


def log_lines(system, service):
    lines = []
    for path in sorted(glob.glob(os.path.join(system.state_dir, "log", f"{service}-*.log"))):
        with open(path, encoding="utf-8") as handle:
            lines += [line for line in handle.read().splitlines() if line.strip()]
    return lines


def records(system, service):
    return [json.loads(line) for line in log_lines(system, service)]


def with_id(system, service, request_id):
    return [record for record in records(system, service) if record.get("correlation_id") == request_id]


def test_one_request_id_is_in_the_log_of_every_service_the_story_touches(system, library):
    request_id = f"trace-{uuid.uuid4().hex}"
    book = library.new_book(copies=1, title="Traced")
    response = library.alice.post("/reservations", json={"book_id": book["id"]}, headers={"X-Request-ID": request_id})
    assert response.status_code == 202, response.text
    assert response.headers["X-Request-ID"] == request_id
    reservation = response.json()
    library.wait_status(reservation["id"], "confirmed")
    library.delivery_for(reservation["id"])
    eventually(lambda: library.mypage(library.alice)[reservation["id"]]["delivery_status"] == "preparing")

    # What each service logged for this one request, in the order it happened.
    expected = {
        "gateway": "POST /reservations 202",
        "reservation": "reservation requested",
        "product": "applied reservation_requested",
        "delivery": "applied reservation_confirmed",
        "mypage": "applied delivery_created",
        "notification": "applied reservation_confirmed",
    }
    for service, message in expected.items():
        mine = eventually(lambda: with_id(system, service, request_id), timeout=10,
                          message=f"{request_id} in {service}'s log")
        assert all(record["service"] == service for record in mine)
        assert message in [record["msg"] for record in mine], (service, [record["msg"] for record in mine])
    # ... and the reservation's whole story in the reservation service: requested, then confirmed.
    assert {"applied copy_allocated"} <= {record["msg"] for record in with_id(system, "reservation", request_id)}


def test_every_log_line_is_json_with_its_service_and_worker_lines_carry_their_id(system, library):
    library.new_book(copies=0)  # at least one request through the gateway and product
    for service in SERVICES:
        lines = log_lines(system, service)
        assert lines, service
        for line in lines:
            record = json.loads(line)  # nothing but JSON lines
            assert record["service"] == service, line
            assert {"at", "level", "logger", "msg", "correlation_id"} <= set(record), line
            if record["logger"] in ("common.handlers", "gateway.http") and "route" in record or \
                    record["msg"].startswith("applied "):
                assert record["correlation_id"], line


def test_the_request_id_comes_back_on_every_answer_even_a_404(system):
    request_id = f"lost-{uuid.uuid4().hex[:8]}"
    response = requests.get(system.gateway_url + "/no/such/page", headers={"X-Request-ID": request_id}, timeout=5)
    assert response.status_code == 404
    assert response.headers["X-Request-ID"] == request_id
    made_up = requests.get(system.gateway_url + "/books", timeout=5).headers["X-Request-ID"]
    assert uuid.UUID(made_up)
    eventually(lambda: any(record["msg"] == "GET (unmatched) 404" for record in with_id(system, "gateway", request_id)))
