"""docs/operations.md names only commands, files and metrics that exist."""
import os
import re

from prometheus_client import REGISTRY

import common.metrics  # noqa: F401  (registers the Book Rental metrics)
from ops.run import ROOT

DOC = open(os.path.join(ROOT, "docs", "operations.md"), encoding="utf-8").read()
ALERTS = open(os.path.join(ROOT, "deploy", "prometheus", "alerts.yml"), encoding="utf-8").read()


def test_every_make_target_it_names_exists():
    makefile = open(os.path.join(ROOT, "Makefile"), encoding="utf-8").read()
    targets = set(re.findall(r"^([a-z-]+):", makefile, re.M))
    named = set(re.findall(r"`make ([a-z-]+)", DOC)) | set(re.findall(r"\bmake ([a-z-]+) SERVICE", DOC))
    assert named and named <= targets, sorted(named - targets)


def test_every_file_it_links_or_names_exists():
    paths = set(re.findall(r"\]\(\.\./([^)#]+)\)", DOC))
    paths |= set(re.findall(r"`((?:deploy|k8s|common|gateway|ops|tests)/[\w./-]+)`", DOC))
    assert paths
    for path in paths - {"deploy/secrets/rabbitmq_password"}:  # made by deploy/generate-secrets.sh
        path = path.rstrip("/")
        assert os.path.exists(os.path.join(ROOT, path.split("<")[0])), path


def test_every_metric_and_alert_it_explains_is_real():
    exported = {family.name for family in REGISTRY.collect() if family.name.startswith("bookrental_")}
    named = set(re.findall(r"`(bookrental_[a-z_]+)", DOC))
    assert named
    for name in named:
        base = re.sub(r"_(total|bucket|count|sum)$", "", name)
        assert base in exported, name
    alerts = set(re.findall(r"- alert: (\w+)", ALERTS))
    assert set(re.findall(r"`(BookRental\w+)`", DOC)) == alerts
