"""One JSON object per line, each with the correlation id of its worker.

Configured from ``config.yml`` (``LOGGING``), so every service logs alike.
"""
import json
import logging
import re
from datetime import datetime, timezone

from common import correlation

# user:password@ in a URL. Nameko hides the password of the first broker of
# a failover list (AMQP_URI "a;b;c") only; the others' are hidden here.
_PASSWORD = re.compile(r"(://[^:/@\s;]+:)[^@\s;]+@")


def _hide_passwords(text):
    return _PASSWORD.sub(r"\1********@", text) if "://" in text else text


_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record):
        line = {
            "at": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _hide_passwords(record.getMessage()),
            "service": correlation.service(),
            "correlation_id": correlation.current(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info).splitlines()[-1]
            line["trace"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)
