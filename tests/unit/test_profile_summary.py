"""`make profile` reads py-spy's raw stacks: each sample counted once in the
layer of its innermost frame, and once per function of our code it passes."""
from bench.profile import layer_of, summarise

RAW = [
    "GreenThread.main (eventlet/greenthread.py:272);_apply (common/handlers.py:222);"
    "ProductService.on_reservation_requested (product/service.py:100);"
    "Session.scalar (sqlalchemy/orm/session.py:2421) 3\n",
    "GreenThread.main (eventlet/greenthread.py:272);_apply (common/handlers.py:222);"
    "_apply (common/handlers.py:230);Logger.info (logging/__init__.py:1489) 1\n",
    "BaseHub.run (eventlet/hubs/hub.py:352) 4\n",
    "not a sample\n",
]


def test_the_innermost_frame_names_the_layer():
    assert layer_of("Session.scalar (sqlalchemy/orm/session.py:2421)") == "SQLAlchemy"
    assert layer_of("_apply (common/handlers.py:222)") == "our code"
    assert layer_of("Logger.info (logging/__init__.py:1489)") == "logging"
    assert layer_of("<module> (something.py:1)") == "other"


def test_shares_by_layer_and_our_functions_inclusive():
    summary = summarise(RAW)
    assert summary["samples"] == 8
    assert summary["layers"] == {"SQLAlchemy": 37.5, "eventlet": 50.0, "logging": 12.5}
    ours = dict(summary["ours"])
    assert ours["_apply (common/handlers.py)"] == 50.0  # counted once per sample, not per line
    assert ours["ProductService.on_reservation_requested (product/service.py)"] == 37.5


def test_the_bare_bound_prices_rpcs_at_the_floor_and_every_event_at_one_hop():
    from bench.profile import bare_bound

    floors = {"rpc": 2.0, "event_hop": 0.5}
    delivered = {"rpc requests": 1.0, "rpc answers": 1.0, "events": 7.0, "hints": 2.0}
    # answers are in the floor already; hints go to a consumer of our own, not a Nameko handler
    assert bare_bound(floors, delivered) == 2.0 + 7 * 0.5
