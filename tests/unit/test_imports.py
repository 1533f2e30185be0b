"""Dependencies point one way (issue #15): services -> common; ops, bench,
tests -> the rest. Never common -> ops/bench/tests, never bench -> tests, no
service imports ops, bench, tests or another service, and no import cycle
among the project's modules.

Every ``.py`` file's imports are read from its syntax tree (those inside
functions too: a lazy import is a dependency all the same), so this needs
nothing installed and runs in a fraction of a second."""
import ast
import importlib
import os
import re

import pytest

from common.config import SERVICES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SKIP = {".venv", "node_modules", "var", ".git", "test-results", "__pycache__"}
# Who may not import whom: layer -> the layers it must not import. A service
# is a layer of its own; "services" stands for every service but itself.
FORBIDDEN = {
    "common": {"ops", "bench", "tests", "deploy", "services"},
    "bench": {"tests"},
    "services": {"ops", "bench", "tests", "deploy", "services"},
}


def project_files():
    for directory, subdirs, files in os.walk(ROOT):
        subdirs[:] = sorted(d for d in subdirs if d not in SKIP and not d.startswith("."))
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(directory, name)


def layer(path):
    top = os.path.relpath(path, ROOT).split(os.sep)[0]
    return top if top in SERVICES or top in {"common", "ops", "bench", "tests", "deploy"} else None


def _module_file(base, dotted):
    """The file ``dotted`` names under the directory ``base``, if any."""
    stem = os.path.join(base, *dotted.split("."))
    for candidate in (stem + ".py", os.path.join(stem, "__init__.py")):
        if os.path.isfile(candidate):
            return candidate
    return None


def resolve(dotted, importer):
    """The project file an absolute import names: from the project root, or
    (pytest's ``pythonpath = . tests`` and rootdir-relative imports) from
    tests/ and the importing test's own directory."""
    bases = [ROOT]
    if layer(importer) == "tests":
        bases += [os.path.join(ROOT, "tests"), os.path.dirname(importer)]
    for base in bases:
        found = _module_file(base, dotted)
        if found:
            return found
    return None


def imports_of(path, source=None):
    """The project files ``path`` (or ``source``, as if it were there) imports."""
    tree = ast.parse(source if source is not None else open(path).read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(resolve(alias.name, path) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from its package
                base = os.path.dirname(path)
                for _ in range(node.level - 1):
                    base = os.path.dirname(base)
                module = _module_file(base, node.module) if node.module else os.path.join(base, "__init__.py")
            else:
                module = resolve(node.module, path)
            if module is None:
                continue
            found.add(module)
            if module.endswith("__init__.py"):  # from package import submodule
                found.update(_module_file(os.path.dirname(module), alias.name) for alias in node.names)
    found.discard(None)
    found.discard(path)
    # an empty __init__.py is no dependency of its own
    return {f for f in found if not f.endswith("__init__.py") or os.path.getsize(f) > 0}


GRAPH = {path: imports_of(path) for path in project_files()}


def rel(path):
    return os.path.relpath(path, ROOT)


def violations():
    for path, imported in GRAPH.items():
        source = layer(path)
        rules = FORBIDDEN.get("services" if source in SERVICES else source, set())
        for target in imported:
            kind = layer(target)
            if kind in SERVICES and kind != source:
                kind_rule = "services"
            else:
                kind_rule = kind
            if kind_rule in rules and kind != source:
                yield f"{rel(path)} imports {rel(target)} ({source} -> {kind})"


def cycles():
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in GRAPH.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(rel(member) for member in component))

    for node in GRAPH:
        if node not in index:
            visit(node)
    return found


def test_the_walk_sees_the_project():
    assert len(GRAPH) > 100
    assert os.path.join(ROOT, "common", "events.py") in GRAPH[os.path.join(ROOT, "common", "handlers.py")]


def test_dependencies_point_one_way():
    assert sorted(violations()) == []


def test_only_the_tests_put_tests_on_the_import_path():
    """``sys.path`` + tests/ would let bench import the tests unseen by the walk above."""
    offenders = [rel(path) for path in GRAPH if layer(path) != "tests"
                 and re.search(r"sys\.path.*[\"']tests[\"']", open(path).read())]
    assert offenders == []


def test_no_import_cycle():
    assert cycles() == []


@pytest.mark.parametrize("source, target, allowed", [
    ("common/x.py", "from ops.run import load_config", False),
    ("common/x.py", "from common import events", True),
    ("bench/x.py", "from helpers import rpc", True),  # not a project module from bench/: sys.path has no tests/
    ("bench/x.py", "from tests.helpers import rpc", False),
    ("product/x.py", "from reservation.domain import CONFIRMED", False),
    ("product/x.py", "import product.domain", True),
    ("reservation/x.py", "from bench import harness", False),
    ("ops/x.py", "from bench.harness import rpc", True),
])
def test_the_rules_catch_what_they_should(source, target, allowed):
    path = os.path.join(ROOT, source)
    tree_imports = GRAPH.copy()
    try:
        GRAPH.clear()
        GRAPH[path] = imports_of(path, target)
        assert (list(violations()) == []) == allowed
    finally:
        GRAPH.clear()
        GRAPH.update(tree_imports)


def test_the_service_list_names_every_service_and_only_them():
    """common.config.SERVICES, the one list: each entry is a Nameko service of
    that name, and every service folder is in it."""
    for name, target in SERVICES.items():
        module, cls = target.split(":")
        assert getattr(importlib.import_module(module), cls).name == name
    folders = {os.path.basename(os.path.dirname(path)) for path in GRAPH if path.endswith(os.sep + "service.py")}
    assert folders - {"common"} == set(SERVICES)
