"""The gateway's record of every instance it took: a JSON-lines journal, synced line by line.

One line per event, keyed names only (never a UID, a name or a path from the source):
``received`` (spooled to disk; only then does the sender hear success), ``sent`` (to one
destination), ``quarantined`` (refused, with a PHI-free reason). An instance is *done* once it is
quarantined or sent to every destination. After a crash, even a kill -9, the journal says what to
do again: every received instance that is not done. A line torn by a crash mid-write is ignored.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path


class Journal:
    """Append-only, thread-safe; each line is synced to disk before :meth:`append` returns.

    Parameters
    ----------
    path : Path
        The journal file (created if absent).
    destinations : list of str
        The names of the destinations an instance must reach to be done.
    """

    def __init__(self, path: Path, destinations: list[str]):
        self.path = Path(path)
        self.destinations = list(destinations)
        self._needed = set(destinations)
        self._lock = threading.Lock()
        self.received: dict[str, dict] = {}  # instance -> its received record
        self.sent: dict[str, set[str]] = {}
        self.quarantined: dict[str, str] = {}
        # received and not done, in arrival order: kept as records are applied, so that asking what is
        # pending costs what is pending, not everything the journal ever received
        self._pending: dict[str, None] = {}
        if self.path.exists():
            with open(self.path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        self._apply(json.loads(line))
                    except (ValueError, KeyError):
                        continue  # the line a crash tore
        self._fh = open(self.path, "a", encoding="utf-8")

    def _apply(self, record: dict) -> None:
        instance = record["instance"]
        if record["event"] == "received":
            self.received[instance] = record
        elif record["event"] == "sent":
            self.sent.setdefault(instance, set()).add(record["to"])
        elif record["event"] == "quarantined":
            self.quarantined[instance] = record["reason"]
        if instance in self.received and not self.done(instance):
            self._pending[instance] = None
        else:
            self._pending.pop(instance, None)

    def append(self, event: str, instance: str, **fields) -> dict:
        """Write one event line (synced) and update the in-memory state; the record written."""
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": event, "instance": instance, **fields}
        with self._lock:
            self._fh.write(json.dumps(record) + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())  # what the journal says happened, happened: it survives a crash
            self._apply(record)
        return record

    def done(self, instance: str) -> bool:
        """Whether ``instance`` is quarantined or held by every destination."""
        return instance in self.quarantined or self.sent.get(instance, set()) >= self._needed

    def pending(self) -> list[str]:
        """Instances received but not done, in the order they came."""
        with self._lock:
            return list(self._pending)

    def counts(self) -> dict[str, int]:
        """Instances received, forwarded (to every destination), quarantined and pending."""
        with self._lock:
            received, quarantined, pending = len(self.received), len(self.quarantined), len(self._pending)
            return {"received": received, "forwarded": received - quarantined - pending, "quarantined": quarantined,
                    "pending": pending}

    def close(self) -> None:
        """Close the journal file."""
        self._fh.close()
