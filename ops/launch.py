"""Start one supervised service process: ``python -m ops.launch <spec.json>``.

The supervisor runs this each time it starts (or restarts) a process; it
counts the start, gives a backend its metrics port, and then *becomes* the
service (``exec``), so the pid the supervisor watches is the service's own.

The spec (``ops/run.py`` writes it, see ``ops/state.py``) holds the whole
environment, so a process restarted by the supervisor runs exactly as the
one ``make start`` started: the same settings, the same replica, the same log.
"""
import os
import sys

from ops import state


def main(argv=None):
    path = (argv or sys.argv[1:])[0]
    spec = state.read_json(path)
    if not spec:
        sys.exit(f"ops.launch: cannot read {path}")
    layout = state.Layout(os.path.dirname(os.path.dirname(os.path.dirname(path))))
    program = spec["program"]
    state.write_atomic(layout.starts(program), f"{layout.start_count(program) + 1}\n")

    env = dict(spec["env"])
    if spec.get("metrics"):
        host, port = spec["metrics"].rsplit(":", 1)
        if spec.get("metrics_auto") and not state.bindable(host, int(port)):
            # Taken since the last start: another free port, and Prometheus told.
            spec["metrics"] = f"{host}:{state.free_port(host)}"
            spec["liveness"] = f"http://{spec['metrics']}/health/live"
            state.write_json(path, spec, mode=0o600)
            state.write_targets(layout)
        env["METRICS_PORT"] = spec["metrics"]
    os.execve(spec["argv"][0], spec["argv"], env)


if __name__ == "__main__":
    main()
