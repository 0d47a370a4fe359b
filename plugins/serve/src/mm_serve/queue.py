"""A bounded request queue with one generation thread that runs requests in batches.

The model is used by one thread, so requests cannot corrupt each other's state (caches,
streamers, RNG) and the event loop stays free to accept and stream. Requests that arrive while
the model is busy wait; when it is free, the thread takes the oldest waiting request and every
waiting request that may share its call (equal ``batch_key``), up to ``max_batch_size``,
waiting at most ``batch_wait_s`` for more to arrive, and runs them as one batch (one request
alone runs through its own ``work``). Requests beyond ``max_waiting`` waiting ones are refused
(:class:`QueueFull`, answered 429).

A request whose client went away is cancelled: taken out of the queue if it was waiting; if it
was running alone, stopped at its model's next ``on_text`` call; if it was running in a batch,
its row's ``stopped()`` turns true and its text is dropped, so its batch-mates go on (the whole
call is stopped at the next ``on_text`` once every request of the batch is cancelled).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

log = logging.getLogger(__name__)

OnText = Callable[[str], None]
#: Runs several jobs as one model call: ``run_batch(jobs, on_texts)`` -> one result per job.
RunBatch = Callable[[list["Job"], list[OnText]], list[Any]]


class QueueFull(Exception):
    """No room for another waiting request."""


class GenerationCancelled(Exception):
    """Raised inside the model's ``on_text`` callback to stop a cancelled generation."""


class Job:
    """One request's generation: its events reach the event loop through an asyncio queue.

    Events are ``("text", piece)``, then exactly one of ``("done", result)`` or
    ``("error", exception)``. ``payload`` is what a batch runner needs to run the job (the
    queue does not look at it); jobs with equal, non-``None`` ``batch_key`` may share a call.
    """

    def __init__(self, work: Callable[[OnText], Any], loop: asyncio.AbstractEventLoop,
                 batch_key: Hashable | None = None, payload: Any = None):
        self.work = work
        self.loop = loop
        self.batch_key = batch_key
        self.payload = payload
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.cancelled = threading.Event()
        self.finished = threading.Event()
        self.emitted = False  # a text event was sent

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
        self._forward(piece)

    def _forward(self, piece: str) -> None:
        if piece:
            self.emitted = True
            self.emit("text", piece)

    def stopped(self) -> bool:
        """Whether the client went away (a batch row's ``stopped``)."""
        return self.cancelled.is_set()

    async def next_event(self) -> tuple[str, Any]:
        return await self.events.get()


def _row_on_text(job: Job, batch: list[Job]) -> OnText:
    """A batch row's ``on_text``: drops the text of a cancelled row; stops the call once all are."""
    def on_text(piece: str) -> None:
        if job.cancelled.is_set():
            if all(j.cancelled.is_set() for j in batch):
                raise GenerationCancelled()
            return
        job._forward(piece)
    return on_text


class GenerationQueue:
    """Runs jobs on a daemon thread, in batches when ``run_batch`` is given; at most
    ``max_waiting`` wait behind the running batch."""

    def __init__(self, max_waiting: int, run_batch: RunBatch | None = None, max_batch_size: int = 1,
                 batch_wait_s: float = 0.0):
        if max_waiting < 0:
            raise ValueError("max_waiting must be >= 0")
        if max_batch_size < 1 or batch_wait_s < 0:
            raise ValueError("max_batch_size must be >= 1 and batch_wait_s >= 0")
        self.max_waiting = max_waiting
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size if run_batch is not None else 1
        self.batch_wait_s = batch_wait_s
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._waiting: list[Job] = []
        self._running: list[Job] = []
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.served = 0
        self.cancelled = 0
        self.batches = 0  # model calls that served more than one request
        self.batched = 0  # requests those calls served
        self.largest_batch = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._serve, name="mm-generation", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel everything and let the thread finish its current step."""
        with self._lock:
            for job in [*self._waiting, *self._running]:
                job.cancelled.set()
            self._waiting.clear()
            self._stopping = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- requests ----------------------------------------------------------------------------
    def submit(self, work: Callable[[OnText], Any], batch_key: Hashable | None = None, payload: Any = None) -> Job:
        """Queue ``work(on_text)``; raises :class:`QueueFull` when a batch runs and ``max_waiting`` wait
        (admitted jobs count as waiting until the thread picks them up, so the sum is what is bounded)."""
        job = Job(work, asyncio.get_running_loop(), batch_key, payload)
        with self._lock:
            if len(self._waiting) + bool(self._running) > self.max_waiting:
                raise QueueFull(f"{len(self._waiting)} requests are waiting (limit {self.max_waiting})")
            self._waiting.append(job)
            self._changed.notify_all()
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
            return {"running": len(self._running), "waiting": len(self._waiting),
                    "max_waiting": self.max_waiting, "max_batch_size": self.max_batch_size,
                    "served": self.served, "cancelled": self.cancelled, "batches": self.batches,
                    "batched": self.batched, "largest_batch": self.largest_batch}

    # -- the generation thread ---------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            outcomes = self._run(batch)
            with self._lock:  # free the slots before the clients hear the outcomes
                self._running = []
                for job, outcome in zip(batch, outcomes):
                    job.finished.set()
                    self.served += outcome is not None and outcome[0] == "done"
                if len(batch) > 1:
                    self.batches += 1
                    self.batched += len(batch)
                self.largest_batch = max(self.largest_batch, len(batch))
            for job, outcome in zip(batch, outcomes):
                if outcome is not None:
                    job.emit(*outcome)

    def _take_batch(self) -> list[Job] | None:
        """The oldest waiting job and the waiting jobs that may share its call (``None``: stop)."""
        with self._lock:
            while not self._waiting and not self._stopping:
                self._changed.wait()
            if self._stopping:
                return None
            first = self._waiting.pop(0)
            self._running = batch = [first]
            if first.batch_key is None or self.max_batch_size == 1:
                return batch
            deadline = time.monotonic() + self.batch_wait_s
            while True:
                for job in [j for j in self._waiting if j.batch_key == first.batch_key]:
                    if len(batch) < self.max_batch_size:
                        self._waiting.remove(job)
                        batch.append(job)
                left = deadline - time.monotonic()
                if len(batch) >= self.max_batch_size or left <= 0 or self._stopping:
                    break
                self._changed.wait(left)
            batch[:] = [j for j in batch if not j.cancelled.is_set()] or batch[:1]
            return batch

    def _run(self, batch: list[Job]) -> list[tuple[str, Any] | None]:
        """Each job's outcome (``None``: cancelled, nothing to send)."""
        if len(batch) == 1:
            return [self._run_alone(batch[0])]
        try:
            results = self.run_batch(batch, [_row_on_text(job, batch) for job in batch])
        except GenerationCancelled:
            log.info("batch stopped: every client disconnected")
            return [None] * len(batch)
        except BaseException as exc:
            if any(job.emitted for job in batch):
                return [None if job.cancelled.is_set() else ("error", exc) for job in batch]
            # nothing was sent yet: one at a time, so only the request at fault gets the error
            log.info("batch of %d failed (%s: %s); running its requests one at a time", len(batch),
                     type(exc).__name__, exc)
            return [self._run_alone(job) for job in batch]
        return [None if job.cancelled.is_set() else ("done", result) for job, result in zip(batch, results)]

    @staticmethod
    def _run_alone(job: Job) -> tuple[str, Any] | None:
        if job.cancelled.is_set():
            return None
        try:
            return "done", job.work(job.on_text)
        except GenerationCancelled:
            log.info("generation stopped: the client disconnected")
        except BaseException as exc:  # reported to the request; the thread keeps serving
            return "error", exc
        return None
