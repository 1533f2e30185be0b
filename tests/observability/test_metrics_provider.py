"""common.metrics in-process: the worker timings and outcomes, the port it
serves on, and the values it reads when scraped."""
import os

import pytest
import requests
from nameko.standalone.rpc import ClusterRpcProxy
from nameko.exceptions import RemoteError
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from common import errors
from common.metrics import Metrics, parse_address, route_label
from common.rpc import ServiceRpc, rpc
from helpers import free_port


@pytest.mark.parametrize("rule, label", [
    ("/books/<int(max=2147483647):book_id>", "/books/{book_id}"),
    ("/reservations/<reservation_id>/cancel", "/reservations/{reservation_id}/cancel"),
    ("/static/<path:path>", "/static/{path}"),
    ("/mypage", "/mypage"),
])
def test_a_route_is_labelled_by_its_template(rule, label):
    assert route_label(rule) == label


@pytest.mark.parametrize("setting, address", [
    (0, ("0.0.0.0", 0)), ("", ("0.0.0.0", 0)), (None, ("0.0.0.0", 0)), (9100, ("0.0.0.0", 9100)),
    ("9100", ("0.0.0.0", 9100)), (":9100", ("0.0.0.0", 9100)), ("127.0.0.1:9101", ("127.0.0.1", 9101)),
])
def test_metrics_port_is_an_optional_address_and_a_port(setting, address):
    assert parse_address(setting) == address


def test_a_metrics_port_that_is_not_a_number_is_refused():
    with pytest.raises(ValueError):
        parse_address("localhost:metrics")


class Measured:
    name = "measured"

    metrics = Metrics()
    other = ServiceRpc("elsewhere", breaker=True)

    @rpc
    def fine(self):
        return "ok"

    @rpc
    def refuse(self):
        raise errors.NotFound("no such thing")

    @rpc
    def crash(self):
        raise RuntimeError("a bug")


def scrape(port):
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_workers_are_timed_and_counted_by_outcome_on_the_port_of_the_service(container_factory, rabbit_config):
    port = free_port()
    container = container_factory(Measured, {**rabbit_config, "METRICS_PORT": f"127.0.0.1:{port}"})
    container.start()

    def labels(entrypoint, outcome):
        return {"entrypoint": entrypoint, "kind": "rpc", "outcome": outcome, "service": "measured"}

    before = {case: REGISTRY.get_sample_value("bookrental_worker_calls_total", labels(*case)) or 0
              for case in [("fine", "ok"), ("refuse", "rejected"), ("crash", "error")]}
    timed = REGISTRY.get_sample_value("bookrental_worker_duration_seconds_count",
                                      {"entrypoint": "fine", "kind": "rpc", "service": "measured"}) or 0
    with ClusterRpcProxy(rabbit_config) as cluster:
        assert cluster.measured.fine() == "ok"
        with pytest.raises(RemoteError):
            cluster.measured.refuse()
        with pytest.raises(RemoteError):
            cluster.measured.crash()

    found = scrape(port)  # what the service serves is what it counted
    for case, count in before.items():
        assert found[("bookrental_worker_calls_total", tuple(sorted(labels(*case).items())))] == count + 1, case
    assert found[("bookrental_worker_duration_seconds_count",
                  (("entrypoint", "fine"), ("kind", "rpc"), ("service", "measured")))] == timed + 1
    assert found[("bookrental_circuit_state", (("service", "measured"), ("target", "elsewhere")))] == 0
    container.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_no_port_no_server_and_a_taken_port_does_not_stop_the_service(container_factory, rabbit_config):
    quiet = container_factory(Measured, {**rabbit_config, "METRICS_PORT": 0})
    quiet.start()
    assert next(ext for ext in quiet.dependencies if isinstance(ext, Metrics)).server is None
    quiet.stop()

    port = free_port()
    first = container_factory(Measured, {**rabbit_config, "METRICS_PORT": f"127.0.0.1:{port}"})
    first.start()
    second = container_factory(Measured, {**rabbit_config, "METRICS_PORT": f"127.0.0.1:{port}"})
    second.start()  # logs that the port is taken, and works on
    with ClusterRpcProxy(rabbit_config) as cluster:
        assert cluster.measured.fine() == "ok"
    assert next(ext for ext in second.dependencies if isinstance(ext, Metrics)).server is None


def test_the_metrics_port_answers_the_liveness_check_with_its_pid(container_factory, rabbit_config):
    port = free_port()
    container = container_factory(Measured, {**rabbit_config, "METRICS_PORT": f"127.0.0.1:{port}"})
    container.start()
    answer = requests.get(f"http://127.0.0.1:{port}/health/live", timeout=5)
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "pid": os.getpid()}
    assert "bookrental_worker_calls_total" in requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    container.stop()
