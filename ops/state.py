"""The files a local system keeps in its state directory (``var/`` unless
``BOOKRENTAL_VAR`` names another), and the two rules for touching them.

- **Every file is written whole or not at all**: to a temporary file in the
  same directory, then renamed over the old one (``write_atomic``). A reader
  sees the old content or the new, never a half-written file.
- **A file that cannot be read says nothing**: ``read_json`` returns None,
  and no caller takes that as "the process is dead"; nothing here deletes a
  file because of what it failed to read.

Only the standard library: ``ops.launch`` (run at every start of a service
process) and ``ops.liveness`` import this, and stay light.

The layout::

    <state>/data/<service>.db              each service's SQLite database
    <state>/log/<service>-<replica>.log    each replica's output (every generation's)
    <state>/log/supervisord.log            what the supervisor did
    <state>/log/liveness.log               what the liveness checks did
    <state>/run/supervisord.conf           the supervisor's configuration
    <state>/run/programs/<program>.conf    one supervised process each (generated)
    <state>/run/programs/<program>.json    how to start it: argv, env, replica, probe
    <state>/run/programs/<program>.starts  how many times it has been started
    <state>/run/liveness.json              the latest liveness check of each process
    <state>/run/prometheus/targets.json    every process's metrics address
"""
import contextlib
import fcntl
import hashlib
import json
import os
import socket
import tempfile
import threading
import time

# Set on every process a local system starts (the supervisor and everything
# under it) to that system's state directory: how `make down` finds them all,
# pid files or not. Nothing else sets it.
MARKER = "BOOKRENTAL_SYSTEM"


def write_atomic(path, text, mode=0o644):
    """Write ``text`` to ``path``: a reader sees the old file or the new one."""
    directory = os.path.dirname(path)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def write_json(path, value, mode=0o644):
    write_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n", mode)


def read_json(path):
    """The file's content, or None when it is absent or unreadable."""
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


_LOCKS = {}
_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def locked(path):
    """One holder at a time, across threads and processes: a lock of this
    process first, then ``flock`` on ``path``, asked for without blocking
    (a blocking ``flock`` would stop every green thread of a process under
    eventlet, the holder's too, as under ``nameko test``)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(path, threading.Lock())
    with lock, open(path, "a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Layout:
    """Where a system's files are, under its state directory."""

    def __init__(self, state_dir):
        self.state_dir = os.path.realpath(state_dir)
        self.run = os.path.join(self.state_dir, "run")
        self.log = os.path.join(self.state_dir, "log")
        self.data = os.path.join(self.state_dir, "data")
        self.programs = os.path.join(self.run, "programs")
        self.prometheus = os.path.join(self.run, "prometheus")
        self.supervisor_conf = os.path.join(self.run, "supervisord.conf")
        self.liveness = os.path.join(self.run, "liveness.json")
        self.targets = os.path.join(self.prometheus, "targets.json")
        self.lock = os.path.join(self.run, ".lock")
        self.targets_lock = os.path.join(self.prometheus, ".lock")

    def make(self):
        for directory in (self.run, self.log, self.data, self.programs, self.prometheus):
            os.makedirs(directory, exist_ok=True)

    @property
    def socket(self):
        """The supervisor's control socket. A Unix socket's path is at most
        107 bytes: a deep state directory gets one in the temporary directory,
        named after it."""
        path = os.path.join(self.run, "supervisor.sock")
        if len(path.encode()) <= 100:
            return path
        digest = hashlib.sha1(self.state_dir.encode()).hexdigest()[:16]
        return os.path.join(tempfile.gettempdir(), f"bookrental-{digest}.sock")

    def logfile(self, service, replica):
        return os.path.join(self.log, f"{service}-{replica}.log")

    def spec(self, program):
        return os.path.join(self.programs, f"{program}.json")

    def conf(self, program):
        return os.path.join(self.programs, f"{program}.conf")

    def starts(self, program):
        return os.path.join(self.programs, f"{program}.starts")

    def specs(self):
        """{program: spec} of every configured process (unreadable ones left out)."""
        found = {}
        try:
            names = os.listdir(self.programs)
        except FileNotFoundError:
            return found
        for name in sorted(names):
            if name.endswith(".json") and not name.startswith("."):
                spec = read_json(os.path.join(self.programs, name))
                if spec:
                    found[name[:-5]] = spec
        return found

    def start_count(self, program):
        try:
            with open(self.starts(program)) as handle:
                return int(handle.read().strip() or 0)
        except (OSError, ValueError):
            return 0


def write_targets(layout):
    """``run/prometheus/targets.json``: the metrics address of every process
    that should be running, in Prometheus' file_sd format
    (deploy/prometheus/prometheus.yml reads it). One writer at a time, each
    listing what is configured at that moment, so the last one written is whole."""
    with locked(layout.targets_lock):
        targets = [{"targets": [spec["metrics"]],
                    "labels": {"service": spec["service"], "replica": str(spec["replica"])}}
                   for _, spec in sorted(layout.specs().items(), key=lambda item: (
                       item[1]["service"], item[1]["replica"], item[1].get("generation", 1)))
                   if spec.get("metrics")]
        write_json(layout.targets, targets)


def free_port(host="127.0.0.1"):
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def bindable(host, port):
    """True when a server could listen on ``host:port`` now."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True
