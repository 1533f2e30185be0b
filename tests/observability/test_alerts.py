"""The alert rules and scrape configurations in deploy/prometheus.

With promtool (from Debian's package `prometheus`, which ops/promtool.sh
fetches into .venv/bin for `make test`) the rules are checked and their
unit tests (alerts.test.yml) run; without it those tests are skipped
and the structure is still checked here: every rule is complete, and asks
only for metrics the services export."""
import os
import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client import REGISTRY

import common.metrics  # noqa: F401  (registers the Book Rental metrics)
from ops.run import ROOT, SERVICES

PROMETHEUS = os.path.join(ROOT, "deploy", "prometheus")
CONFIGS = ("prometheus.yml", "prometheus-compose.yml", "prometheus-kubernetes.yml")
PROMTOOL = shutil.which("promtool") or next(
    (path for path in [os.path.join(ROOT, ".venv", "bin", "promtool")] if os.access(path, os.X_OK)), None)
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="no promtool: ops/promtool.sh fetches it")


def load(name):
    with open(os.path.join(PROMETHEUS, name)) as handle:
        return yaml.safe_load(handle)


def rules():
    return [rule for group in load("alerts.yml")["groups"] for rule in group["rules"]]


def exported_metrics():
    """Every series name the services can export: Book Rental's, plus `up`."""
    names = {"up"}
    for family in REGISTRY.collect():
        if not family.name.startswith("bookrental_"):
            continue
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        names |= {family.name + suffix for suffix in suffixes}
    return names


def promtool(*args, cwd=PROMETHEUS):
    result = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@needs_promtool
def test_promtool_accepts_the_rules_and_their_unit_tests_pass():
    assert "SUCCESS" in promtool("check", "rules", "alerts.yml")
    assert "SUCCESS" in promtool("test", "rules", "alerts.test.yml")


@needs_promtool
def test_promtool_accepts_every_scrape_configuration(tmp_path):
    promtool("check", "config", "prometheus.yml")
    promtool("check", "config", "prometheus-compose.yml")
    # Debian's Prometheus is built without Kubernetes discovery: check the
    # rest of that file with a static target in its place.
    text = open(os.path.join(PROMETHEUS, "prometheus-kubernetes.yml")).read()
    stand_in = re.sub(r"kubernetes_sd_configs:\n(?:      .*\n)+", "static_configs:\n      - targets: [127.0.0.1:9100]\n",
                      text)
    assert stand_in != text
    (tmp_path / "prometheus.yml").write_text(stand_in)
    shutil.copy(os.path.join(PROMETHEUS, "alerts.yml"), tmp_path / "alerts.yml")
    promtool("check", "config", "prometheus.yml", cwd=tmp_path)


def test_there_is_an_alert_for_each_way_the_system_goes_wrong():
    names = {rule["alert"] for rule in rules()}
    assert {"BookRentalServiceDown", "BookRentalReplicaDown", "BookRentalServiceAbsent",  # a service down
            "BookRentalHighHttpErrorRate", "BookRentalHighWorkerErrorRate",  # error rate
            "BookRentalSlowHttpRequests", "BookRentalSlowWorkers",  # latency p99
            "BookRentalOutboxBacklog", "BookRentalCircuitOpen", "BookRentalEventsDeadLettered"} <= names


def test_every_rule_is_complete_and_asks_for_metrics_that_exist():
    exported = exported_metrics()
    assert {"bookrental_http_requests_total", "bookrental_worker_duration_seconds_bucket",
            "bookrental_outbox_backlog", "bookrental_circuit_state"} <= exported
    for rule in rules():
        name = rule["alert"]
        assert re.fullmatch(r"BookRental[A-Z][A-Za-z]+", name), name
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s")), name
        used = set(re.findall(r"\b(bookrental_[a-z_]+|up)\b(?=\s*[{\[)]|\s*(?:==|>|<))", rule["expr"]))
        assert used, f"{name} asks for no metric"
        assert used <= exported, f"{name}: {sorted(used - exported)} are not exported (common/metrics.py)"
        assert 'job="bookrental"' in rule["expr"], f"{name} must select the bookrental job"


def test_every_alert_has_a_unit_test():
    tested = {case["alertname"] for test in load("alerts.test.yml")["tests"] for case in test["alert_rule_test"]
              if case.get("exp_alerts")}
    assert {rule["alert"] for rule in rules()} == tested


def test_every_scrape_configuration_names_the_job_the_rules_select_and_loads_them():
    for name in CONFIGS:
        config = load(name)
        assert config["rule_files"] == ["alerts.yml"], name
        jobs = [job["job_name"] for job in config["scrape_configs"]]
        assert jobs == ["bookrental"], name
        assert config["scrape_configs"][0]["honor_labels"] is True, f"{name}: keep the services' own `service`"


def test_the_local_targets_file_is_the_one_ops_run_writes():
    files = load("prometheus.yml")["scrape_configs"][0]["file_sd_configs"][0]["files"]
    assert [os.path.normpath(os.path.join(PROMETHEUS, path)) for path in files] == \
        [os.path.join(ROOT, "var", "run", "prometheus", "targets.json")]


def test_compose_and_kubernetes_scrape_the_port_the_services_serve():
    with open(os.path.join(ROOT, "docker-compose.yml")) as handle:
        compose = yaml.safe_load(handle)
    assert compose["x-environment"]["METRICS_PORT"] == "9100"
    discovered = load("prometheus-compose.yml")["scrape_configs"][0]["dns_sd_configs"]
    ports = {name: sd["port"] for sd in discovered for name in sd["names"]}
    assert ports == {**{name: 9100 for name in SERVICES if name != "gateway"}, "gateway": 8000}
    assert "prometheus" in compose["services"] and compose["services"]["prometheus"]["profiles"] == ["monitoring"]

    with open(os.path.join(ROOT, "k8s", "configmap.yaml")) as handle:
        assert yaml.safe_load(handle)["data"]["METRICS_PORT"] == "9100"
    for name in SERVICES:
        with open(os.path.join(ROOT, "k8s", f"{name}.yaml")) as handle:
            deployment = next(doc for doc in yaml.safe_load_all(handle) if doc and doc["kind"] == "Deployment")
        template = deployment["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", name
        assert annotations["prometheus.io/path"] == "/metrics", name
        container = template["spec"]["containers"][0]
        ports = {port["containerPort"] for port in container.get("ports", [])}
        expected = 8000 if name == "gateway" else 9100
        assert annotations["prometheus.io/port"] == str(expected) and expected in ports, name
