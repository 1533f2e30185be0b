"""The test tree imports its modules by base name (pytest's rootdir import
mode, no packages): two test files of one name in two folders stop the
whole run at collection. Caught here, in the inner loop, instead."""
import collections
import pathlib

TESTS = pathlib.Path(__file__).resolve().parents[1]


def test_every_test_module_has_a_name_of_its_own():
    names = collections.defaultdict(list)
    for path in TESTS.rglob("*.py"):
        if "node_modules" not in path.parts:
            names[path.name].append(str(path.relative_to(TESTS)))
    shared = {name: paths for name, paths in names.items()
              if len(paths) > 1 and name not in ("conftest.py", "__init__.py")}
    assert shared == {}
