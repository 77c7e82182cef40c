"""Logging for commands that run for long (the gateway, pull): one line per record, plain or JSON.

medveil's own records never hold PHI: they name instances and studies by keyed pseudonyms and
refusals by rule. pynetdicom's records at INFO and below quote UIDs from the requests, so its
logger is held at WARNING whatever level is asked for.
"""

from __future__ import annotations

import json
import logging
import time

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and the record's ``audit`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + "Z",
                 "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        entry.update(getattr(record, "audit", {}))
        return json.dumps(entry)


class _PlainFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "audit", None)
        return line + (" " + " ".join(f"{k}={v}" for k, v in fields.items()) if fields else "")


def configure(level: str = "WARNING", as_json: bool = False) -> None:
    """Send medveil's records at ``level`` and above to stderr, plain or as JSON lines."""
    handler = logging.StreamHandler()
    handler.setLevel(level)  # loggers set lower (the audit log, for its own file) stop here
    handler.setFormatter(JsonFormatter() if as_json else _PlainFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
