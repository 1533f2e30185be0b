"""The supervisor of a local system: one supervisord per state directory.

supervisord (http://supervisord.org) starts each service replica as a
*program* of its own, starts it again when it exits (``autorestart``), stops
it gracefully on request (SIGTERM, SIGKILL after ``stopwaitsecs``) and is
driven through its XML-RPC interface on a Unix socket in the state
directory. Its event listener ``ops.liveness`` adds the liveness checks.

This module writes supervisord's configuration, starts and stops the daemon,
and finds every process of the system by its marker (``state.MARKER`` in
its environment), so that nothing it started is ever left behind unseen.
"""
import http.client
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client

from ops import state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LISTENER = "liveness"

# A process counts as started once it has stayed up this long; one that
# exits sooner is started again after 1 s, then 2 s, 3 s... (supervisord's
# BACKOFF), and given up on (FATAL) after START_RETRIES tries. One that exits
# later is started again at once.
START_SECONDS = 5
START_RETRIES = 100
STOP_SECONDS = 30  # SIGTERM, then SIGKILL after this long

# supervisord's states of a process (getProcessInfo's "statename").
LIVE = ("STARTING", "RUNNING", "BACKOFF")    # it runs, or will run again by itself
UP = ("STARTING", "RUNNING", "STOPPING")     # a process exists
FAILED = ("BACKOFF", "EXITED", "FATAL")      # it exited, when nobody asked it to


class Unavailable(RuntimeError):
    """The supervisor does not answer."""


class _UnixTransport(xmlrpc.client.Transport):
    """XML-RPC over supervisord's Unix socket, with a timeout."""

    def __init__(self, path, timeout):
        super().__init__()
        self.path = path
        self.timeout = timeout

    def make_connection(self, host):
        connection = http.client.HTTPConnection("localhost", timeout=self.timeout)
        path, timeout = self.path, self.timeout

        def connect():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(path)
            connection.sock = sock

        connection.connect = connect
        return connection


def _escape(value):
    """A value as supervisord's configuration reads it (``%`` expands there)."""
    return str(value).replace("%", "%%")


def _command(argv):
    return _escape(" ".join(shlex.quote(str(arg)) for arg in argv))


class Supervisor:
    def __init__(self, layout, python=sys.executable):
        self.layout = layout
        self.python = python

    # -- talking to it ----------------------------------------------------

    def rpc(self, timeout=15):
        proxy = xmlrpc.client.ServerProxy("http://localhost", transport=_UnixTransport(self.layout.socket, timeout),
                                          allow_none=True)
        return proxy.supervisor

    def call(self, method, *args, timeout=15, ignore=()):
        """``supervisor.<method>(*args)``; faults named in ``ignore``
        (``BAD_NAME``, ``NOT_RUNNING``...) return None."""
        try:
            return getattr(self.rpc(timeout), method)(*args)
        except xmlrpc.client.Fault as fault:
            if any(name in fault.faultString for name in ignore):
                return None
            raise
        except (OSError, http.client.HTTPException, xmlrpc.client.ProtocolError) as error:
            raise Unavailable(f"the supervisor ({self.layout.socket}) does not answer: {error}") from None

    def running(self):
        try:
            return self.call("getState", timeout=5)["statename"] == "RUNNING"
        except Unavailable:
            return False

    def processes(self):
        """{program: process info} of the services' processes; {} when the
        supervisor is not running."""
        try:
            infos = self.call("getAllProcessInfo")
        except Unavailable:
            return {}
        return {info["name"]: info for info in infos if info["group"] != LISTENER}

    # -- the daemon ---------------------------------------------------------

    def ensure(self):
        """Make sure the supervisor runs; True when this call started it.
        Hold ``layout.lock``."""
        if self.running():
            return False
        self._wait_gone(self._pid(), 60)  # one shutting down: let it finish
        # Nobody supervises this system now: whatever still runs under its
        # marker was left by a supervisor that died, and would run twice.
        leftovers = marked_processes(self.layout.state_dir)
        if leftovers:
            print(f"stopping {len(leftovers)} process(es) left without a supervisor: "
                  + ", ".join(f"{pid} ({describe(pid)})" for pid in leftovers), file=sys.stderr)
            terminate(leftovers)
        self._keep_only_what_to_start_again()
        state.write_targets(self.layout)
        self.write_config()
        out = os.path.join(self.layout.log, "supervisord.out")
        env = dict(os.environ, PYTHONWARNINGS="ignore", **{state.MARKER: self.layout.state_dir})
        with open(out, "ab") as handle:
            result = subprocess.run([self.python, "-m", "supervisor.supervisord", "-c", self.layout.supervisor_conf],
                                    cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=handle,
                                    stderr=subprocess.STDOUT, timeout=60)
        deadline = time.time() + 30
        while result.returncode == 0 and time.time() < deadline:
            if self.running():
                return True
            time.sleep(0.1)
        raise RuntimeError(f"the supervisor did not start (exit status {result.returncode}):\n"
                           + tail(out, 10) + tail(os.path.join(self.layout.log, "supervisord.log"), 10))

    def _keep_only_what_to_start_again(self):
        """Of the programs a dead supervisor ran, keep the newest spec of each
        replica (so ``make up`` starts as many replicas again), and no
        configuration: a new supervisor knows only what is started anew."""
        newest = {}
        for name, spec in self.layout.specs().items():
            key = (spec.get("service"), spec.get("replica"))
            if key not in newest or spec.get("generation", 1) > newest[key][1].get("generation", 1):
                newest[key] = (name, spec)
        kept = {name for name, _ in newest.values()}
        for entry in os.listdir(self.layout.programs):
            name, _, suffix = entry.rpartition(".")
            if suffix == "conf" or (suffix == "json" and name not in kept) or entry.startswith("."):
                os.unlink(os.path.join(self.layout.programs, entry))

    def write_config(self):
        layout = self.layout
        state.write_atomic(layout.supervisor_conf, f"""\
; The supervisor of the Book Rental system in {layout.state_dir}.
; Written by ops/run.py at each start of the supervisor: do not edit.
; Control it with make up/down/start/stop/status, or
;   .venv/bin/supervisorctl -c {layout.supervisor_conf} status

[unix_http_server]
file={_escape(layout.socket)}
chmod=0700

[supervisord]
logfile={_escape(os.path.join(layout.log, "supervisord.log"))}
logfile_maxbytes=5MB
logfile_backups=1
pidfile={_escape(os.path.join(layout.run, "supervisord.pid"))}
childlogdir={_escape(layout.log)}
directory={_escape(ROOT)}
identifier=bookrental

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{_escape(layout.socket)}

; Liveness checks (ops/liveness.py): every 5 s, on each TICK_5 event.
[eventlistener:{LISTENER}]
command={_command([self.python, "-m", "ops.liveness", layout.state_dir])}
directory={_escape(ROOT)}
events=TICK_5
autorestart=true
stdout_logfile=NONE
stderr_logfile={_escape(os.path.join(layout.log, "liveness.log"))}
stderr_logfile_maxbytes=5MB
stderr_logfile_backups=1

[include]
files={_escape(os.path.join(layout.programs, "*.conf"))}
""")

    def shutdown(self, timeout=60):
        """Stop the supervisor (and whatever it still runs); wait until it has exited."""
        pid = self._pid()
        try:
            self.call("shutdown")
        except Unavailable:
            return None
        self._wait_gone(pid, timeout)
        return pid

    def _pid(self):
        try:
            return self.call("getPID", timeout=5)
        except Unavailable:
            pass
        try:
            with open(os.path.join(self.layout.run, "supervisord.pid")) as handle:
                pid = int(handle.read().strip() or 0)
        except (OSError, ValueError):
            return None
        return pid if pid and state.MARKER in environment(pid) else None

    @staticmethod
    def _wait_gone(pid, timeout):
        deadline = time.time() + timeout
        while pid and alive(pid) and time.time() < deadline:
            time.sleep(0.1)

    # -- its programs ------------------------------------------------------

    def program_config(self, name, spec):
        """The ``[program:...]`` section of one service process."""
        restart = spec.get("restart", True)
        return f"""\
; {spec["service"]} replica {spec["replica"]}; how it starts: {name}.json
[program:{name}]
command={_command([self.python, "-m", "ops.launch", self.layout.spec(name)])}
directory={_escape(ROOT)}
autostart=false
autorestart={"true" if restart else "false"}
startsecs={START_SECONDS}
startretries={START_RETRIES if restart else 0}
stopsignal=TERM
stopwaitsecs={STOP_SECONDS}
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile={_escape(self.layout.logfile(spec["service"], spec["replica"]))}
stdout_logfile_maxbytes=0
stdout_logfile_backups=0
"""

    def configure(self, name, spec):
        """Write the program's files and make the supervisor know it as they
        say (added, or replaced while it is not running). Hold ``layout.lock``."""
        state.write_json(self.layout.spec(name), spec, mode=0o600)  # its environment may hold secrets
        state.write_atomic(self.layout.conf(name), self.program_config(name, spec))
        added, changed, _ = self.call("reloadConfig")[0]
        if name in changed:
            self.call("removeProcessGroup", name)
        if name in added or name in changed:
            self.call("addProcessGroup", name, ignore=("ALREADY_ADDED",))

    def forget(self, name):
        """Remove a stopped program and its files. Hold ``layout.lock``."""
        self.call("removeProcessGroup", name, ignore=("BAD_NAME", "STILL_RUNNING"))
        for path in (self.layout.conf(name), self.layout.spec(name), self.layout.starts(name)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


# -- every process of a system, by its marker -------------------------------

def environment(pid):
    """{name: value} of a process's environment as it started; {} when unreadable."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            raw = handle.read()
    except OSError:
        return {}
    found = {}
    for item in raw.split(b"\0"):
        name, sep, value = item.partition(b"=")
        if sep:
            found[name.decode(errors="replace")] = value.decode(errors="replace")
    return found


def _ancestors():
    found, pid = set(), os.getpid()
    while pid > 1 and pid not in found:
        found.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as handle:
                pid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return found


def marked_processes(state_dir):
    """Pids of the live processes started for the system in ``state_dir``
    (never this process or one of its parents)."""
    wanted = os.path.realpath(state_dir)
    mine = _ancestors()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in mine and alive(int(entry)):
            if environment(entry).get(state.MARKER) == wanted:
                found.append(int(entry))
    return sorted(found)


def describe(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            words = handle.read().rstrip(b"\0").split(b"\0")
    except OSError:
        return "?"
    text = " ".join(word.decode(errors="replace") for word in words)
    return text if len(text) <= 120 else text[:117] + "..."


def terminate(pids, grace=10):
    """SIGTERM (and SIGCONT, for a stopped one), then SIGKILL what is left after ``grace`` s."""
    for sig in (signal.SIGCONT, signal.SIGTERM):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    deadline = time.time() + grace
    while any(alive(pid) for pid in pids) and time.time() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.time() + 10
    while any(alive(pid) for pid in pids) and time.time() < deadline:
        time.sleep(0.1)


def alive(pid):
    """True while ``pid`` is a process that has not exited (a zombie has)."""
    if not pid or pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def tail(path, lines=20, since=0):
    """The last ``lines`` lines of a file (from byte ``since`` on), indented."""
    try:
        with open(path, "rb") as handle:
            handle.seek(since)
            text = handle.read().decode(errors="replace")
    except OSError:
        return f"    ({path}: nothing written)\n"
    kept = text.splitlines()[-lines:]
    if not kept:
        return f"    ({path}: nothing written)\n"
    return f"  {path}:\n" + "".join(f"    {line}\n" for line in kept)
