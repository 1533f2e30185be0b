"""One JSON object per line, each with the correlation id of its worker.

Configured from ``config.yml`` (``LOGGING``), so every service logs alike.
"""
import json
import logging
import re
import time

from common import correlation

# user:password@ in a URL. Nameko hides the password of the first broker of
# a failover list (AMQP_URI "a;b;c") only; the others' are hidden here.
_PASSWORD = re.compile(r"(://[^:/@\s;]+:)[^@\s;]+@")


def _hide_passwords(text):
    return _PASSWORD.sub(r"\1********@", text) if "://" in text else text


_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

# One JSON encoder, made once: json.dumps(..., default=str) builds a new one per call.
_encode = json.JSONEncoder(default=str).encode


def lean_records():
    """Stop every log record from looking up what no line of ours prints: its
    thread (under eventlet a green ``threading.current_thread()``, the
    costliest part of a record), process, multiprocessing name and calling
    frame (``findCaller``). The logging HOWTO's "Optimization" switches; the
    records' ``threadName``, ``process``, ``funcName`` and ``lineno`` become
    None / defaults, which no formatter here reads."""
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ms), level, logger, message,
    service, correlation id, then the record's ``extra`` fields."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        lean_records()  # built once per process, by logging.config from config.yml
        self._second = (None, "")  # (a second, its text), swapped as one

    def _at(self, record):
        # The same text as datetime.isoformat(timespec="milliseconds") in UTC,
        # the date and time formatted once a second. (Rounded to the
        # microsecond first, as datetime does; record.msecs is not.)
        second = int(record.created)
        micro = round((record.created - second) * 1_000_000)
        if micro == 1_000_000:
            second, micro = second + 1, 0
        cached, stamp = self._second
        if second != cached:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, stamp)
        return f"{stamp}.{micro // 1000:03d}+00:00"

    def format(self, record):
        service, correlation_id = correlation.for_log()
        line = {
            "at": self._at(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _hide_passwords(record.getMessage()),
            "service": service,
            "correlation_id": correlation_id,
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key[0] != "_":
                line[key] = value
        if record.exc_info:
            trace = self.formatException(record.exc_info)
            line["error"] = trace.splitlines()[-1]
            line["trace"] = trace
        return _encode(line)
