"""docs/design.md matches the code: the event types, services, commands and
event handlers it names exist, and every event type and service that exists
is named in it. (When an event type is added, add it to design.md.)"""
import importlib
import os
import re

import pytest
from nameko.events import EventHandler
from nameko.rpc import Rpc, RpcProxy

from common.events import TYPES
from common.config import SERVICES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = open(os.path.join(ROOT, "docs", "design.md")).read()
NAME = re.compile(r"`([a-z][a-z0-9_]*)`")


def section(title):
    """The text under ``## title`` up to the next ``## `` heading."""
    start = DOC.index(f"\n## {title}\n")
    end = DOC.find("\n## ", start + 1)
    return DOC[start:end if end != -1 else None]


def per_service(title):
    """{service: its text} for the ``### `service` `` subsections of a section."""
    parts = re.split(r"\n### `([a-z]+)`[^\n]*\n", section(title))
    return dict(zip(parts[1::2], parts[2::2]))


def row(text, label):
    match = re.search(rf"^\| {label} \|(.*)\|$", text, re.M)
    assert match, f"no {label} row"
    return match.group(1)


def services():
    return set(SERVICES)


def service_class(name):
    module = importlib.import_module(f"{name}.service")
    return next(value for value in vars(module).values()
                if isinstance(value, type) and value.__module__ == module.__name__
                and getattr(value, "name", None) == name)


def entrypoints(cls, kind):
    for attr in dir(cls):
        for entrypoint in getattr(getattr(cls, attr), "nameko_entrypoints", ()):
            if isinstance(entrypoint, kind):
                yield attr, entrypoint


def test_the_storming_names_every_event_type_once_and_only_those():
    named = [name for text in per_service("Event storming").values() for name in NAME.findall(row(text, "Events"))]
    assert sorted(set(named) - set(TYPES)) == [], "events named in docs/design.md that common/events.py lacks"
    assert sorted(set(TYPES) - set(named)) == [], "event types missing from docs/design.md's event storming"
    assert len(named) == len(set(named)), "an event listed under two contexts"


def test_each_event_is_listed_under_the_context_that_publishes_it():
    for service, text in per_service("Event storming").items():
        for name in NAME.findall(row(text, "Events")):
            assert TYPES[name].producer == service, (name, service)


def test_policies_react_to_events_that_exist():
    for service, text in per_service("Event storming").items():
        for clause in re.findall(r"when ([^:]*):", row(text, "Policies")):
            for name in NAME.findall(clause):
                assert name in TYPES, (service, name)


def test_every_service_has_its_sections_and_no_other():
    assert set(per_service("Event storming")) == services()
    assert set(per_service("Ports and adapters, per service")) == services()
    table = set(re.findall(r"^\| `([a-z]+)` \|", section("Context map"), re.M))
    assert table == services()


@pytest.mark.parametrize("service", sorted(services() - {"gateway"}))
def test_commands_are_the_rpc_methods_of_the_backend(service):
    cls = service_class(service)
    rpcs = {name for name, _ in entrypoints(cls, Rpc)} - {"health"}
    assert set(NAME.findall(row(per_service("Event storming")[service], "Commands"))) == rpcs


@pytest.mark.parametrize("service", sorted(services()))
def test_the_diagram_names_the_events_the_service_handles(service):
    cls = service_class(service)
    handled = {entrypoint.event_type for _, entrypoint in entrypoints(cls, EventHandler)}
    diagram = per_service("Ports and adapters, per service")[service]
    node = re.search(r"event handlers?: ([^\"]*)\"", diagram)
    assert node, f"{service}: no event handlers node"
    assert set(re.findall(r"[a-z]+_[a-z_]+", node.group(1))) == handled


def context_map_edges():
    """{("rpc" | "events"): {(upstream caller or producer, other)}} as the context map draws them."""
    block = re.search(r"```mermaid\n(.*?)```", section("Context map"), re.S).group(1)
    edges = {"rpc": set(), "events": set()}
    for source, arrow, targets in re.findall(r"^\s*(\w+) (--|-\.) .*?(?:-->|\.->) (.+)$", block, re.M):
        for target in targets.split("&"):
            edges["rpc" if arrow == "--" else "events"].add((source, target.strip()))
    return edges


def test_the_context_map_draws_every_rpc_call_and_no_other():
    called = set()
    for service in services():
        for dependency in vars(service_class(service)).values():
            if isinstance(dependency, RpcProxy):
                called.add((service, dependency.target_service))
    assert context_map_edges()["rpc"] == called


def test_the_context_map_draws_who_hears_whose_events():
    heard = {(TYPES[entrypoint.event_type].producer, service)
             for service in services() for _, entrypoint in entrypoints(service_class(service), EventHandler)}
    assert context_map_edges()["events"] == heard
