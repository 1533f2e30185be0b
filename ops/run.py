"""Run the services as supervised local processes: ``make up/down/start/stop/
rollout/status``.

Each replica is one ``nameko run`` process, run by a supervisor of this
system's own (supervisord, ``ops/supervision.py``) the way Kubernetes runs a
pod: started again within a second or so when it exits, and killed and
started again when it fails its liveness check three times in a row
(``ops/liveness.py``). ``make stop`` stops it for good (until ``make start``).

State lives under ``var/`` (``BOOKRENTAL_VAR`` names another directory, for
a second system beside the first): logs in ``var/log``, SQLite databases in
``var/data``, the supervisor's files in ``var/run`` (``ops/state.py``). Every
process carries ``BOOKRENTAL_SYSTEM=<that directory>`` in its environment:
``make down`` finds every one of them by it, whatever happened to the files.

``start`` returns once every replica is consuming (the broker counts its
consumers on the service's RPC queue; the gateway answers HTTP); ``stop``
returns once every replica has exited (SIGTERM lets Nameko finish the work
in hand; SIGKILL after 30 s). Either stops what it started when it fails,
and says why, with the log lines that explain it; so does ``up``.

``rollout`` replaces the replicas of a service one at a time: a new process
starts beside the old one, and the old one is stopped (gracefully) only once
the new one consumes, or for the gateway, listens on the same port (the
gateway opens it with SO_REUSEPORT; the old one drains, see gateway/server.py).

When ``SMTP_HOST`` is not set, a development mail catcher
(``ops/mailcatcher.py``) runs beside the services, supervised as process
``mailcatcher-1``, on a port of its own kept in ``var/run/mailcatcher.port``,
writing what it receives to ``var/mail/``; the services mail to it.

Each backend process serves its Prometheus metrics, and its liveness check,
on a free port of its own (``METRICS_PORT``);
``var/run/prometheus/targets.json`` lists every process's metrics address
for Prometheus (``deploy/prometheus``).

The end-to-end tests, the benchmark and the soak start their own systems
through ``Cluster``, each with its own state directory, vhost and port.
"""
import argparse
import concurrent.futures
import os
import signal
import socket
import sys
import time
import urllib.request

from kombu import Connection

from common.config import BACKENDS, SERVICES, load_config
from ops import cli, clustered, state
from ops.brokers import Brokers
from ops.supervision import FAILED, LIVE, UP, Supervisor, Unavailable, alive, marked_processes, tail, terminate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIL_CATCHER = "mailcatcher"  # not a Nameko service: the development SMTP server, when SMTP_HOST is not set


def program_name(service, replica, generation=1):
    """The supervisor's name of a process: ``product-1``; after a rollout
    ``product-1.2`` (the second generation of replica 1), and so on."""
    return f"{service}-{replica}" if generation == 1 else f"{service}-{replica}.{generation}"


class StartFailed(RuntimeError):
    """A service did not come up; the message says why, with its log lines."""


class Process:
    """One supervised process: its spec (what ops/run.py asked for) and what
    the supervisor says of it."""

    def __init__(self, name, spec, info):
        self.name = name
        self.spec = spec or {}
        self.info = info or {}

    service = property(lambda self: self.spec.get("service"))
    replica = property(lambda self: self.spec.get("replica"))
    generation = property(lambda self: self.spec.get("generation", 1))
    state = property(lambda self: self.info.get("statename", "UNKNOWN"))
    pid = property(lambda self: self.info.get("pid") or 0)


class Cluster:
    """The services of one Book Rental system, as supervised processes.

    Two ways to take a service down, on purpose different:

    - ``stop(service)``: ``make stop``. It stays down until ``start``; the
      supervisor does not start it again.
    - ``kill(service)`` (and ``hang(service)``): a crash (SIGKILL) or a hung
      process (SIGSTOP). The supervisor heals it: started again at once after
      a crash, killed and started again after three failed liveness checks.
      A process started with ``start(..., restart=False)``, or by a cluster
      made with ``heal=False``, is not started again (the fault tests that
      need a crash to stay a crash).
    """

    def __init__(self, state_dir=None, env=None, python=sys.executable, heal=True):
        self.layout = state.Layout(state_dir or os.environ.get("BOOKRENTAL_VAR") or os.path.join(ROOT, "var"))
        self.layout.make()
        self.state_dir = self.layout.state_dir
        # Clustered (make up CLUSTER=n, ops/clustered.py): the brokers and
        # databases chosen then, until make down.
        self.clustered = clustered.load(self.state_dir)
        self.env = {**(self.clustered or {}).get("env", {}), **(env or {})}
        self.python = python
        self.heal = heal  # the default of start()'s restart
        self.supervisor = Supervisor(self.layout, python)
        self.mail_dir = os.path.join(self.state_dir, "mail")
        self.mail_catcher_port = None
        if not (self.env.get("SMTP_HOST") or os.environ.get("SMTP_HOST")):
            self.mail_catcher_port = self._catcher_port()
            self.env.update(SMTP_HOST="127.0.0.1", SMTP_PORT=str(self.mail_catcher_port))
        self.config = load_config(self._process_env())
        self._log_marks = {}  # logfile -> its size when this object last started a process on it

    def _catcher_port(self):
        """The mail catcher's port: chosen once per state directory, so the
        services and a restarted catcher agree on it."""
        path = os.path.join(self.layout.run, f"{MAIL_CATCHER}.port")
        try:
            with open(path) as handle:
                return int(handle.read().strip())
        except (OSError, ValueError):
            pass
        port = state.free_port()
        state.write_atomic(path, f"{port}\n")
        return port

    def _command(self, service):
        if service == MAIL_CATCHER:
            return [self.python, "-m", "ops.mailcatcher", "serve", "--port", str(self.mail_catcher_port),
                    "--dir", self.mail_dir]
        return [self.python, "-m", "nameko", "run", "--config", os.path.join(ROOT, "config.yml"), SERVICES[service]]

    def _services(self):
        """What make up runs: the mail catcher (when there is one) and the services."""
        return ([MAIL_CATCHER] if self.mail_catcher_port else []) + list(SERVICES)

    @property
    def gateway_url(self):
        host, port = self.config["WEB_SERVER_ADDRESS"].rsplit(":", 1)
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"

    def _process_env(self, replica=1, service=None):
        env = dict(os.environ)
        env.setdefault("PYTHONWARNINGS", "ignore")
        env["PYTHONPATH"] = ROOT
        for name in SERVICES:
            key = f"{name.upper()}_DB_URI"
            env.setdefault(key, f"sqlite:///{os.path.join(self.state_dir, 'data', name + '.db')}")
        env.setdefault("TOKEN_KEYS", os.path.join(self.state_dir, "keys", "token-keys.pem"))  # gateway/keys.py
        env.update(self.env)
        env[state.MARKER] = self.state_dir
        env["BOOKRENTAL_HOME"] = ROOT
        if self.clustered and service:
            # Every node, each process starting with another one.
            offset = (list(SERVICES).index(service) if service in SERVICES else 0) + replica - 1
            env["AMQP_URI"] = clustered.rotated(self.clustered["amqp_uris"], offset)
        if service == "gateway" and replica > 1:
            host, port = env.get("GATEWAY_ADDRESS", "127.0.0.1:8000").rsplit(":", 1)
            env["GATEWAY_ADDRESS"] = f"{host}:{int(port) + replica - 1}"
        return env

    def logfile(self, service, replica=1):
        return self.layout.logfile(service, replica)

    # -- what runs ------------------------------------------------------

    def processes(self, service=None):
        """Every configured process (of ``service``), oldest generation first."""
        infos = self.supervisor.processes()
        specs = self.layout.specs()
        found = [Process(name, specs.get(name), infos.get(name)) for name in set(specs) | set(infos)]
        found = [p for p in found if p.service and (service is None or p.service == service)]
        order = self._services()
        return sorted(found, key=lambda p: (order.index(p.service) if p.service in order else 99,
                                            p.replica, p.generation))

    def _current(self, service):
        """{replica: the newest process of that replica that runs or will}."""
        found = {}
        for process in self.processes(service):
            if process.state in LIVE:
                found[process.replica] = process
        return found

    def pids(self, service):
        """{replica: pid} of the running replicas of ``service``."""
        return {replica: process.pid for replica, process in self._current(service).items()
                if process.state in UP and alive(process.pid)}

    def replicas(self, service):
        """How many replicas of ``service`` are configured (running or not)."""
        return len({process.replica for process in self.processes(service)})

    # -- start and stop -------------------------------------------------

    def start(self, service, replicas=1, timeout=120, restart=None):
        """Run ``replicas`` replicas of ``service`` (starting the missing
        ones, stopping any beyond); returns once they all consume. When they
        do not, stops what it started and raises ``StartFailed``.
        ``restart``: started again by the supervisor when it dies (by
        default, unless this cluster was made with ``heal=False``)."""
        restart = self.heal if restart is None else restart
        started = []
        try:
            with state.locked(self.layout.lock):
                self.supervisor.ensure()
            processes = self.processes(service)
            self._stop_processes([p for p in processes if p.replica > replicas])
            for replica in range(1, replicas + 1):
                mine = [p for p in processes if p.replica == replica]
                if any(p.state in LIVE for p in mine):
                    continue  # it runs, or the supervisor is starting it again
                generation = max((p.generation for p in mine), default=1)
                started.append(self._launch(service, replica, generation, restart))
            self.wait_consuming(service, replicas, timeout)
        except BaseException:
            self._stop_names(started)
            raise

    def _launch(self, service, replica, generation, restart):
        """Configure and start one process; its program name."""
        name = program_name(service, replica, generation)
        env = self._process_env(replica, service)
        metrics, auto = self._metrics_address(service, env) if service in SERVICES else (None, False)
        if service == "gateway":
            liveness = f"{self._gateway_base()}:{self._gateway_port(replica)}/health/live"
        elif service in BACKENDS:
            env["METRICS_PORT"] = metrics or "0"
            liveness = f"http://{metrics}/health/live" if metrics else None
        else:  # the mail catcher: restarted when it exits; it has no liveness check
            liveness = None
        spec = {
            "program": name, "service": service, "replica": replica, "generation": generation,
            "argv": self._command(service), "env": env, "metrics": metrics, "metrics_auto": auto, "liveness": liveness, "restart": restart,
        }
        logfile = self.logfile(service, replica)
        self._log_marks[logfile] = os.path.getsize(logfile) if os.path.exists(logfile) else 0
        with state.locked(self.layout.lock):
            self.supervisor.configure(name, spec)
            state.write_targets(self.layout)
            self.supervisor.call("startProcess", name, False, ignore=("ALREADY_STARTED",))
        return name

    def _metrics_address(self, service, env):
        """(host:port of the process's /metrics or None, whether it was
        chosen here). A backend gets a free port unless METRICS_PORT says
        otherwise (0: off); the gateway serves its metrics on its HTTP port."""
        if service == "gateway":
            host, port = env.get("GATEWAY_ADDRESS", "127.0.0.1:8000").rsplit(":", 1)
            return f"{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}", False
        wanted = str(env.get("METRICS_PORT", "") or "auto")
        if wanted in ("0", "off"):
            return None, False
        if wanted != "auto":
            return (wanted if ":" in wanted else f"127.0.0.1:{wanted}"), False
        return f"127.0.0.1:{state.free_port()}", True

    def metrics_addresses(self, service=None):
        """{(service, replica): host:port} of the running processes' metrics."""
        return {(process.service, process.replica): process.spec["metrics"]
                for process in self.processes(service)
                if process.state in LIVE and process.spec.get("metrics")}

    def write_targets(self):
        """var/run/prometheus/targets.json: every process's metrics address."""
        state.write_targets(self.layout)

    def _gateway_base(self):
        return self.gateway_url.rsplit(":", 1)[0]

    def _gateway_port(self, replica):
        return int(self.gateway_url.rsplit(":", 1)[1]) + replica - 1

    def wait_consuming(self, service, replicas, timeout=120):
        """Until ``replicas`` replicas of ``service`` consume (the gateway:
        answer ``/health/live``). Raises ``StartFailed`` as soon as one
        exits, or is restarted, on the way."""
        deadline = time.time() + timeout
        first_pids = {}
        while True:
            newest = {p.replica: p for p in self.processes(service) if p.replica <= replicas}
            for process in newest.values():
                if process.state in FAILED:
                    raise self._failed(process, f"exited while starting ({process.state})")
            current = self._current(service)
            for process in current.values():
                first = first_pids.setdefault(process.name, process.pid)
                if process.pid and first and process.pid != first:
                    raise self._failed(process, "exited while starting and was started again")
            if len(current) < replicas:
                raise StartFailed(f"{service}: {len(current)} of {replicas} replicas are running; "
                                  f"see {self.layout.log}")
            if service == "gateway":
                if all(_http_ok(f"{self._gateway_base()}:{self._gateway_port(r)}/health/live")
                       for r in range(1, replicas + 1)):
                    return
            elif service == MAIL_CATCHER:
                if _port_open(self.mail_catcher_port):
                    return
            elif self.consumers(service) >= replicas:
                return
            if time.time() > deadline:
                raise StartFailed(f"{service} did not start consuming within {timeout}s\n"
                                  + self._explain(service, replicas))
            time.sleep(0.2)

    def _failed(self, process, what):
        return StartFailed(f"{process.name} {what}\n" + self._explain(process.service, [process.replica]))

    def _explain(self, service, replicas):
        """The log lines (since this object started the process) that say why."""
        numbers = replicas if isinstance(replicas, list) else range(1, replicas + 1)
        text = ""
        for replica in numbers:
            path = self.logfile(service, replica)
            text += tail(path, 20, self._log_marks.get(path, 0))
        return text

    def consumers(self, service):
        """How many processes consume ``service``'s RPC queue right now."""
        try:
            with Connection(self.config["AMQP_URI"], connect_timeout=2) as connection:
                _, _, count = connection.default_channel.queue_declare(f"rpc-{service}", passive=True)
                return count
        except Exception:
            return 0

    def stop(self, service, timeout=30):
        """``make stop``: every replica exits (gracefully) and stays down."""
        return self._stop_processes(self.processes(service), timeout)

    def _stop_names(self, names, timeout=30):
        wanted = set(names)
        return self._stop_processes([p for p in self.processes() if p.name in wanted], timeout)

    def _stop_processes(self, processes, timeout=30):
        """Stop them all at once; returns [(name, pid)] of those that ran."""
        if not processes:
            return []
        if not self.supervisor.running():  # nothing runs under it; make down stops any stray
            with state.locked(self.layout.lock):
                for process in processes:
                    for path in (self.layout.conf(process.name), self.layout.spec(process.name)):
                        if os.path.exists(path):
                            os.unlink(path)
                state.write_targets(self.layout)
            return []
        stopped = [(p.name, p.pid) for p in processes if p.pid and p.state in UP]
        for process in processes:
            if process.pid and process.state in UP:
                _signal(process.pid, signal.SIGCONT)  # a stopped (SIGSTOP) process could not heed SIGTERM
            self.supervisor.call("stopProcess", process.name, False, ignore=("NOT_RUNNING", "BAD_NAME"))
        names = {p.name for p in processes}
        deadline = time.time() + timeout + 15  # the supervisor's SIGKILL comes after `timeout`
        while time.time() < deadline:
            infos = self.supervisor.processes()
            if not any(infos[name]["statename"] in UP + ("BACKOFF",) for name in names if name in infos):
                break
            time.sleep(0.1)
        with state.locked(self.layout.lock):
            for process in processes:
                self.supervisor.forget(process.name)
            state.write_targets(self.layout)
        return stopped

    def kill(self, service):
        """kill -9 every replica: a crash. Returns once they have exited; the
        supervisor starts them again (unless started with restart=False)."""
        pids = self.pids(service)
        for pid in pids.values():
            _signal(pid, signal.SIGKILL)
        self._wait_exit(pids, 10)
        return pids

    def wait_healed(self, service, old, timeout=60):
        """After ``kill``: until the supervisor has started every replica of
        ``old`` ({replica: pid}) again as a new process and it consumes.
        (Right after the kill the old process reads as exited, which
        ``wait_consuming`` alone would take for a failed start.)"""
        deadline = time.time() + timeout
        while any(self.pids(service).get(replica) in (None, pid) for replica, pid in old.items()):
            if time.time() >= deadline:
                raise StartFailed(f"{service} was not started again within {timeout:.0f}s; see {self.layout.log}")
            time.sleep(0.05)
        self.wait_consuming(service, len(old), timeout=max(1.0, deadline - time.time()))

    def hang(self, service):
        """kill -STOP every replica: a process that is there and does nothing.
        Its liveness checks fail, and the supervisor kills and starts it again."""
        pids = self.pids(service)
        for pid in pids.values():
            os.kill(pid, signal.SIGSTOP)
        return pids

    def rollout(self, service, timeout=120):
        """Replace every replica of ``service``, one at a time, with no pause
        in service: start the new process, wait until it consumes (the
        gateway: until it listens on the port, beside the old one), then stop
        the old one gracefully. A new process that does not come up is
        stopped and the old one keeps running."""
        current = self._current(service)
        if not current:
            raise RuntimeError(f"{service} is not running: make start SERVICE={service}")
        for replica, old in sorted(current.items()):
            generation = max(p.generation for p in self.processes(service) if p.replica == replica) + 1
            name = self._launch(service, replica, generation, old.spec.get("restart", True))
            try:
                self._wait_replacement(service, replica, name, timeout)
            except BaseException:
                self._stop_names([name])
                raise
            self._stop_processes([old])

    def _wait_replacement(self, service, replica, name, timeout):
        deadline = time.time() + timeout
        first = None
        while True:
            process = next((p for p in self.processes(service) if p.name == name), None)
            if process is None or process.state in FAILED or (first and process.pid != first):
                raise self._failed(process or Process(name, {"service": service, "replica": replica}, {}),
                                   "(the new process) exited while starting")
            first = first or process.pid
            if service == "gateway":
                port = self._gateway_port(replica)
                if process.pid and _listening(process.pid, port) and \
                        _http_ok(f"{self._gateway_base()}:{port}/health/live"):
                    return
            elif self.consumers(service) >= sum(1 for p in self.processes(service) if p.state in UP):
                return
            if time.time() > deadline:
                raise StartFailed(f"the new {service} did not start within {timeout}s\n"
                                  + self._explain(service, [replica]))
            time.sleep(0.2)

    @staticmethod
    def _wait_exit(pids, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not any(alive(pid) for pid in pids.values()):
                return True
            time.sleep(0.1)
        return False

    def up(self, timeout=180):
        """Every service running and the gateway ready. Keeps what runs,
        starts what is missing; when that fails, stops what it started
        (the supervisor too, if it started it) and raises, saying why."""
        with state.locked(self.layout.lock):
            started_supervisor = self.supervisor.ensure()
        before = {p.name for p in self.processes() if p.state in LIVE}
        try:
            # The mail catcher, when there is one, comes first: the first
            # notice finds it. Then every service starts side by side, each
            # waiting only for its own import, migration and consumers (the
            # gateway needs no backend to start); up returns once they all
            # consume.
            if self.mail_catcher_port:
                self.start(MAIL_CATCHER, 1, timeout)
            self._each(list(SERVICES), lambda service: self.start(service, max(1, self.replicas(service)), timeout))
            self.wait_ready(timeout)
        except BaseException:
            if started_supervisor:
                self.down()
            else:
                self._stop_names({p.name for p in self.processes() if p.state in LIVE} - before)
            raise

    def down(self):
        """Stop every process of this system: the services (the gateway
        first, so no new request comes in; then the rest, side by side; the
        mail catcher last, so the mails being sent get there), the
        supervisor, and anything else that carries this system's marker.
        Returns [(name, pid)] of what it stopped."""
        stopped = []
        if self.supervisor.running():
            stopped += self._stop_processes(self.processes("gateway"))
            stopped += self._stop_processes([p for p in self.processes() if p.service in BACKENDS])
            stopped += self._stop_processes(self.processes())
            pid = self.supervisor.shutdown()
            if pid:
                stopped.append(("supervisord", pid))
        leftovers = marked_processes(self.state_dir)
        if leftovers:
            terminate(leftovers)
            stopped += [("stray process", pid) for pid in leftovers]
        if self.clustered:
            stopped += [(f"RabbitMQ node {name}", pid) for name, pid in clustered.down(self.state_dir)]
            self.clustered = None
        with state.locked(self.layout.lock):
            for name in os.listdir(self.layout.programs):
                os.unlink(os.path.join(self.layout.programs, name))
            state.write_targets(self.layout)
        return stopped

    @staticmethod
    def _each(services, action):
        with concurrent.futures.ThreadPoolExecutor(len(services)) as pool:
            list(pool.map(action, services))

    def wait_ready(self, timeout=180):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if _http_ok(self.gateway_url + "/health/ready"):
                return
            time.sleep(0.3)
        raise StartFailed(f"{self.gateway_url}/health/ready did not answer 200 within {timeout}s\n"
                          + self._explain("gateway", 1))

    def status(self):
        """Every process: [{service, replica, program, pid, state, uptime,
        restarts, liveness}], uptime in seconds."""
        checked = state.read_json(self.layout.liveness) or {}
        checks = checked.get("processes", {})
        rows = []
        for process in self.processes():
            info = process.info
            uptime = info["now"] - info["start"] if process.state in ("STARTING", "RUNNING") else None
            check = checks.get(process.name) or {}
            if not process.spec.get("liveness"):
                liveness = "not checked"
            elif process.state != "RUNNING" or check.get("pid") != process.pid:
                liveness = "-"
            elif check.get("failures"):
                liveness = f"failing ({check['failures']}/{checked.get('threshold')}): {check.get('detail')}"
            else:
                liveness = "ok" if check.get("passed") else "starting"
            rows.append({"service": process.service, "replica": process.replica, "program": process.name,
                         "pid": process.pid or None, "state": process.state, "uptime": uptime,
                         "restarts": max(0, self.layout.start_count(process.name) - 1), "liveness": liveness})
        return rows


def _signal(pid, sig):
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _listening(pid, port):
    """True when process ``pid`` has a listening TCP socket on ``port`` (Linux /proc)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    except OSError:
        return False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
                return True
    return False


def _port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _http_ok(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except Exception:
        return False


def _duration(seconds):
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def print_status(cluster):
    rows = cluster.status()
    if not cluster.supervisor.running():
        print(f"not running (no supervisor answers on {cluster.layout.socket}); make up starts it")
    if rows:
        header = ("SERVICE", "REPLICA", "PROCESS", "PID", "STATE", "UPTIME", "RESTARTS", "LIVENESS")
        table = [header] + [(r["service"], str(r["replica"]), r["program"], str(r["pid"] or "-"), r["state"],
                             _duration(r["uptime"]), str(r["restarts"]), r["liveness"]) for r in rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
        for row in table:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    if cluster.supervisor.running():
        print(f"supervised by supervisord (pid {cluster.supervisor.call('getPID')}): a process that exits is "
              f"started again; one that fails its liveness check 3 times in a row (every 5 s) is killed and "
              f"started again. Logs: {cluster.layout.log}")
    else:
        strays = marked_processes(cluster.state_dir)
        if strays:
            print(f"{len(strays)} process(es) of this system run without a supervisor: {strays}; "
                  f"make down stops them")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "start", "stop", "kill", "status", "rollout", "metrics",
                                            "broker-start", "broker-stop"])
    parser.add_argument("service", nargs="?", choices=[*SERVICES, MAIL_CATCHER])
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--cluster", type=int, default=0, help="make up: run on N RabbitMQ nodes of our own")
    parser.add_argument("--node", type=int, help="broker-start/broker-stop: which node")
    args = parser.parse_args(argv)
    if args.command in ("start", "stop", "kill", "rollout") and not args.service:
        parser.error("name a SERVICE")
    if args.command in ("status", "metrics"):
        cli.quiet_when_reader_leaves()
    try:
        if args.command in ("broker-start", "broker-stop"):
            return run_broker(args)
        state_dir = os.environ.get("BOOKRENTAL_VAR") or os.path.join(ROOT, "var")
        running_clustered = clustered.load(state_dir)
        if args.command == "up" and args.cluster and not running_clustered and \
                any(p.state in LIVE for p in Cluster().processes()):
            raise RuntimeError("this system runs on one broker now; make down first, then make up CLUSTER="
                               f"{args.cluster}")
        if args.command == "up" and (args.cluster or running_clustered):
            state.Layout(state_dir).make()
            prepare_cluster(state_dir, args.cluster or len(running_clustered["nodes"]))
        cluster = Cluster()
        run(cluster, args)
    except (StartFailed, RuntimeError, Unavailable, TimeoutError) as error:
        print(f"make {args.command} failed: {error}", file=sys.stderr)
        if args.command in ("up", "start"):
            print("What this command started has been stopped again.", file=sys.stderr)
        sys.exit(1)


def prepare_cluster(state_dir, size):
    """Brokers and databases for ``make up CLUSTER=n``; when the nodes of a
    clustered run are there already, it goes on with them."""
    settings = clustered.load(state_dir)
    if settings and len(settings["nodes"]) != size:
        raise RuntimeError(f"this system runs on {len(settings['nodes'])} nodes: make down first")
    print(f"brokers: {size} RabbitMQ nodes of our own, clustered (AMQP on "
          f"{', '.join(str(5700 + n) for n in range(1, size + 1))})", flush=True)
    brokers = clustered.brokers_of(settings, state_dir) if settings else Brokers(state_dir, size)
    before = {node.name for node, running in brokers.status() if running}
    try:
        settings = clustered.prepare(state_dir, size, brokers=brokers)
    except Exception as error:
        for node in brokers.nodes:  # a make up that fails stops what it started
            if node.name not in before and node.pids():
                node.stop()
        raise RuntimeError(f"the brokers or the databases did not come up: {type(error).__name__}: {error}") \
            from None
    print(f"brokers: {len(settings['nodes'])} nodes clustered; services on PostgreSQL "
          f"({os.environ.get('DATABASE_HOST') or '127.0.0.1:5432'}) with quorum queues", flush=True)


def run_broker(args):
    """make broker-stop/broker-start NODE=n."""
    state_dir = os.environ.get("BOOKRENTAL_VAR") or os.path.join(ROOT, "var")
    settings = clustered.load(state_dir)
    if settings is None:
        raise RuntimeError("no nodes of our own run here: make up CLUSTER=3 first")
    if not args.node:
        raise RuntimeError("name a NODE (1 to %d)" % len(settings["nodes"]))
    brokers = clustered.brokers_of(settings, state_dir)
    try:
        node = brokers.node(args.node)
    except ValueError as error:
        raise RuntimeError(str(error)) from None
    if args.command == "broker-stop":
        brokers.stop(args.node)
        print(f"RabbitMQ node {node.name} (AMQP {node.port}) stopped; the services use the others")
    else:
        brokers.start(args.node)
        print(f"RabbitMQ node {node.name} (AMQP {node.port}) running, back in the cluster")


def run(cluster, args):
    relative = os.path.relpath(cluster.state_dir, ROOT)
    where = relative if not relative.startswith("..") else cluster.state_dir
    if args.command == "up":
        cluster.up()
        management = ", ".join((cluster.clustered or {}).get("management_urls") or ["http://127.0.0.1:15672"])
        print(f"Book Rental is up.\n  web app and API: {cluster.gateway_url}/\n"
              f"  API description: {cluster.gateway_url}/openapi.json\n"
              f"  RabbitMQ console: {management}  (guest/guest on a local broker)\n"
              f"  metrics: make metrics (Prometheus targets: {where}/run/prometheus/targets.json)\n"
              + (f"  mail: notices go to the mail catcher on 127.0.0.1:{cluster.mail_catcher_port}; make mail shows them\n"
                 if cluster.mail_catcher_port else f"  mail: notices are mailed through {cluster.config['SMTP_HOST']}\n") +
              f"  processes: make status (supervised: restarted when they die or hang)\n"
              f"  logs: {where}/log/   stop: make down")
    elif args.command == "down":
        stopped = cluster.down()
        if stopped:
            print("stopped: " + ", ".join(f"{name} (pid {pid})" for name, pid in stopped))
        else:
            print("nothing was running")
        print("Book Rental services stopped" + (" (and the RabbitMQ nodes of make up CLUSTER=n)." if any(
            name.startswith("RabbitMQ node") for name, _ in stopped) else " (the broker keeps running)."))
    elif args.command == "start":
        cluster.start(args.service, args.replicas)
        print(f"{args.service}: {args.replicas} replica(s) consuming")
    elif args.command == "stop":
        stopped = cluster.stop(args.service)
        print(f"{args.service}: stopped " + (", ".join(f"{name} (pid {pid})" for name, pid in stopped) or "(none ran)"))
    elif args.command == "kill":
        killed = cluster.kill(args.service)
        print(f"{args.service}: killed {sorted(killed.values())}; the supervisor starts it again")
    elif args.command == "rollout":
        cluster.rollout(args.service)
        print(f"{args.service}: every replica replaced, {len(cluster.pids(args.service))} consuming")
    elif args.command == "metrics":
        for (service, replica), address in sorted(cluster.metrics_addresses(args.service).items()):
            print(f"{service}-{replica}\thttp://{address}/metrics")
    else:
        print_status(cluster)


if __name__ == "__main__":
    main()
