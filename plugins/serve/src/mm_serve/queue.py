"""A bounded request queue with one generation thread.

The model is used by one thread, one request at a time, so requests cannot corrupt each
other's state (caches, streamers, RNG) and the event loop stays free to accept and stream.
Requests beyond ``max_waiting`` waiting ones are refused (:class:`QueueFull`, answered 429).
A request whose client went away is cancelled: taken out of the queue if it was waiting, or
stopped at its model's next ``on_text`` call if it was running, which frees the slot.
"""

from __future__ import annotations

import asyncio
import logging
import queue as _queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

OnText = Callable[[str], None]


class QueueFull(Exception):
    """No room for another waiting request."""


class GenerationCancelled(Exception):
    """Raised inside the model's ``on_text`` callback to stop a cancelled generation."""


class Job:
    """One request's generation: its events reach the event loop through an asyncio queue.

    Events are ``("text", piece)``, then exactly one of ``("done", result)`` or
    ``("error", exception)``.
    """

    def __init__(self, work: Callable[[OnText], Any], loop: asyncio.AbstractEventLoop):
        self.work = work
        self.loop = loop
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.cancelled = threading.Event()
        self.finished = threading.Event()

    def emit(self, kind: str, value: Any) -> None:
        """Hand an event to the event loop (called from the generation thread)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the loop is closed: the server is shutting down
            self.cancelled.set()

    def on_text(self, piece: str) -> None:
        """The callback given to the model: forwards a piece, or stops a cancelled request."""
        if self.cancelled.is_set():
            raise GenerationCancelled()
        if piece:
            self.emit("text", piece)

    async def next_event(self) -> tuple[str, Any]:
        return await self.events.get()


class GenerationQueue:
    """Runs jobs one at a time on a daemon thread; at most ``max_waiting`` wait behind the running one."""

    def __init__(self, max_waiting: int):
        if max_waiting < 0:
            raise ValueError("max_waiting must be >= 0")
        self.max_waiting = max_waiting
        self._lock = threading.Lock()
        self._waiting: list[Job] = []
        self._running: Job | None = None
        self._pending: _queue.SimpleQueue[Job | None] = _queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.served = 0
        self.cancelled = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="mm-generation", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel everything and let the thread finish its current step."""
        with self._lock:
            for job in [*self._waiting, *([self._running] if self._running else [])]:
                job.cancelled.set()
            self._waiting.clear()
        self._pending.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- requests ----------------------------------------------------------------------------
    def submit(self, work: Callable[[OnText], Any]) -> Job:
        """Queue ``work(on_text)``; raises :class:`QueueFull` when one job runs and ``max_waiting`` wait
        (admitted jobs count as waiting until the thread picks them up, so the sum is what is bounded)."""
        job = Job(work, asyncio.get_running_loop())
        with self._lock:
            if len(self._waiting) + (self._running is not None) > self.max_waiting:
                raise QueueFull(f"{len(self._waiting)} requests are waiting (limit {self.max_waiting})")
            self._waiting.append(job)
        self._pending.put(job)
        return job

    def cancel(self, job: Job) -> None:
        """The client went away: a waiting job leaves the queue now, a running one stops soon
        (nothing happens to a finished job)."""
        with self._lock:
            if job.cancelled.is_set() or job.finished.is_set():
                return
            job.cancelled.set()
            self.cancelled += 1
            if job in self._waiting:
                self._waiting.remove(job)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"running": int(self._running is not None), "waiting": len(self._waiting),
                    "max_waiting": self.max_waiting, "served": self.served, "cancelled": self.cancelled}

    # -- the generation thread ---------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            job = self._pending.get()
            if job is None:
                return
            with self._lock:
                if job not in self._waiting:  # cancelled while waiting
                    continue
                self._waiting.remove(job)
                self._running = job
            outcome: tuple[str, Any] | None = None
            try:
                outcome = ("done", job.work(job.on_text))
            except GenerationCancelled:
                log.info("generation stopped: the client disconnected")
            except BaseException as exc:  # reported to the request; the thread keeps serving
                outcome = ("error", exc)
            with self._lock:  # free the slot before the client hears the outcome
                self._running = None
                job.finished.set()
                self.served += outcome is not None and outcome[0] == "done"
            if outcome is not None:
                job.emit(*outcome)
