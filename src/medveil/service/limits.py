"""What the server lets requests cost: per request (:class:`Limits`) and together (:class:`MemoryBudget`).

Decoded sizes are known from PNG headers before anything is decoded, so a request first holds its
decoded bytes from the one budget every request of the server shares, and decodes only then; a
request that would take the server past the budget waits for others to finish (up to
``Limits.budget_wait_seconds``, then 503), so memory stays bounded however many arrive at once. A
request that would need more than the whole budget (an append to a dataset grown that large) is refused
at once with 413.
"""

from __future__ import annotations

import ctypes
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from fastapi import HTTPException


def http_error(status: int, message: str) -> HTTPException:
    """Return the HTTP error the service answers with: ``status`` and a one-line ``message``."""
    return HTTPException(status_code=status, detail=message)


@dataclass(frozen=True)
class Limits:
    """What one request may carry, what all requests may hold at once, and what one tenant may keep.

    Sizes of decoded images are counted in bytes of their samples (H x W x channels x sample bytes),
    from each PNG's header before anything is decoded.
    """

    max_request_bytes: int = 256 * 1024**2
    max_images: int = 20_000
    max_side: int = 1024
    max_predict_images: int = 256
    max_decoded_bytes: int = 512 * 1024**2  # one request's images once decoded
    max_total_decoded_bytes: int = 512 * 1024**2  # every request's at once (the server's working memory)
    max_tenant_bytes: int = 4 * 1024**3  # every dataset a tenant keeps, decoded
    budget_wait_seconds: float = 120.0  # how long a request waits for the shared budget before 503

    def __post_init__(self):
        if self.max_total_decoded_bytes < self.max_decoded_bytes:
            raise ValueError("the shared decoding budget must hold at least one request's (max_decoded_bytes)")

    def check_decoded(self, size: int) -> None:
        """413 when one request's images would take more than :attr:`max_decoded_bytes` once decoded."""
        if size > self.max_decoded_bytes:
            raise http_error(413, f"the images expand beyond {self.max_decoded_bytes} bytes")

    @property
    def max_member_bytes(self) -> int:
        """The largest PNG the side limit allows (RGB, stored uncompressed), plus room for metadata."""
        return 3 * self.max_side**2 + self.max_side + 2**20


class MemoryBudget:
    """Decoded bytes held by the requests in flight, bounded by ``limits.max_total_decoded_bytes``."""

    def __init__(self, limits: Limits):
        self.total, self.wait = limits.max_total_decoded_bytes, limits.budget_wait_seconds
        self.used = 0
        self._free = threading.Condition()

    @contextmanager
    def hold(self, size: int) -> Iterator[None]:
        """Hold ``size`` bytes for the block: wait while others hold too much; 503 after the wait.

        More than the whole budget can never be held, so it is refused at once (413) instead of waiting.
        """
        if size > self.total:
            raise http_error(413, f"this request would hold {size} bytes of decoded images, more than the server's "
                                  f"whole decoding budget of {self.total} bytes")
        with self._free:
            if not self._free.wait_for(lambda: self.used + size <= self.total, timeout=self.wait):
                raise http_error(503, "the server is decoding other requests' images; retry in a minute")
            self.used += size
        try:
            yield
        finally:
            with self._free:
                self.used -= size
                self._free.notify_all()


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 256 * 1024


def return_freed_memory() -> None:
    """Make glibc hand large freed blocks back to the system at once.

    By default glibc raises its mmap threshold each time a large block is freed, up to 32 MiB, after
    which decoded images (1 MiB each at 1024x1024) come from per-thread heaps that keep their freed
    memory: six concurrent uploads of 120 MiB then peaked at idle + 225 MiB, not idle + 120 MiB. A
    fixed threshold keeps blocks of 256 KiB and more in their own mappings, returned when freed
    (idle + 140 MiB). No-op where the C library is not glibc.
    """
    try:
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError):  # not glibc: nothing to tell
        pass
