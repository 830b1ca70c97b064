"""Input and output beside the model: `ReadAhead` and `SerialWorker`, two bounded background threads.

``vdf predict`` runs its model in the main thread. Decoding the next frames (PyAV) and writing
finished ones (`vdf.io.depth.DepthVideoWriter`) need not wait for it, nor it for them:

- `ReadAhead` iterates a frame source in a background thread and keeps at most ``size`` items
  decoded ahead of the consumer (``size`` counts frames: the memory it may add is ``size`` decoded
  frames). `vdf.io.VideoSource` and `vdf.io.live.LiveSource` use it when built with
  ``prefetch_frames > 0`` (``--data.prefetch_frames``).
- `SerialWorker` runs submitted calls one after another in a background thread, with at most
  ``max_pending`` of them waiting or running; ``submit`` blocks beyond that (backpressure, so
  memory stays bounded). The prediction writer (`vdf.callbacks.prediction_writer`) uses two: one
  for each frame's first pass, one for each finished video's outputs.

Both threads are daemons and both classes give errors back to the thread that uses them: an
exception raised in the background is raised again in the consumer (the next ``next`` / ``submit``
/ ``wait``), with a note naming what the thread was working on. ``close`` stops a thread and joins
it with a timeout, so a stuck read (a network stream waiting for data) never blocks the caller
forever. Size 0 means no thread at all: the work runs in the caller, in the same order.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["JOIN_TIMEOUT", "BackgroundError", "ReadAhead", "SerialWorker"]

T = TypeVar("T")

#: Seconds `ReadAhead.close` waits for its thread (one frame's decoding is far less).
JOIN_TIMEOUT = 5.0
#: How often a blocked consumer looks whether its background thread is still alive.
_POLL = 0.5

_ITEM, _END, _ERROR = range(3)


def _note(error: BaseException, text: str) -> BaseException:
    if text not in getattr(error, "__notes__", ()):
        error.add_note(text)
    return error


class _ReaderState:
    """What `ReadAhead` and its thread share (the thread holds no reference to the `ReadAhead`
    itself, so dropping the iterator stops the thread)."""

    def __init__(self, size: int):
        self.slots = threading.Semaphore(size)
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ahead = 0
        self.max_ahead = 0


def _read(state: _ReaderState, make_items: Callable[[], Iterable[Any]]) -> None:
    items = None
    try:
        items = iter(make_items())
        while True:
            state.slots.acquire()  # a free slot: fewer than `size` items wait for the consumer
            if state.stop.is_set():
                return
            try:
                item = next(items)
            except StopIteration:
                state.queue.put((_END, None))
                return
            with state.lock:
                state.ahead += 1
                state.max_ahead = max(state.max_ahead, state.ahead)
            state.queue.put((_ITEM, item))
            del item
    except BaseException as error:  # given to the consumer, whatever it is
        state.queue.put((_ERROR, error))
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            try:
                close()
            except Exception as error:  # reported where the consumer will see it
                state.queue.put((_ERROR, error))


class ReadAhead(Generic[T]):
    """Iterates ``make_items()`` in a background thread, at most ``size`` items ahead of the consumer.

    Args:
        make_items: called once, in the background thread, to get the iterable (a generator is
            created, iterated and closed in that one thread, as PyAV containers want).
        size: the most items read but not yet taken by the consumer (at least 1).
        label: what is read (a file), named in the note added to a background error.
        join_timeout: seconds `close` waits for the thread.

    The thread starts at the first ``next``. Items come out in order; an exception raised by the
    source is raised by the ``next`` that reaches it, after the items before it, unchanged (so a
    `vdf.io.VideoInputError` is caught where it would be without the thread) but for a note.
    Closing early (`close`, or dropping the iterator) stops the thread after the item it is
    reading and closes the source in that thread. `max_ahead` is the most items that were ever
    read and not yet taken (never more than ``size``).
    """

    def __init__(
        self, make_items: Callable[[], Iterable[T]], size: int, label: str, join_timeout: float = JOIN_TIMEOUT
    ):
        if size < 1:
            raise ValueError(f"ReadAhead needs size >= 1, got {size}")
        self.size = size
        self.label = str(label)
        self.join_timeout = join_timeout
        self._make = make_items
        self._state = _ReaderState(size)
        self._thread: threading.Thread | None = None
        self._done = False

    def __iter__(self) -> Iterator[T]:
        return self

    @property
    def max_ahead(self) -> int:
        return self._state.max_ahead

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        state = self._state
        if self._thread is None:
            self._thread = threading.Thread(
                target=_read, args=(state, self._make), name=f"vdf-read-ahead {self.label}", daemon=True
            )
            self._thread.start()
        while True:
            try:
                kind, value = state.queue.get(timeout=_POLL)
                break
            except queue.Empty:
                if not self._thread.is_alive() and state.queue.empty():
                    self._done = True
                    raise RuntimeError(f"{self.label}: the reading thread ended without a result") from None
        if kind == _ITEM:
            with state.lock:
                state.ahead -= 1
            state.slots.release()
            return value
        self._done = True
        self._thread.join(self.join_timeout)
        if kind == _END:
            raise StopIteration
        raise _note(value, f"raised while reading {self.label} ahead of the model (vdf.io.prefetch.ReadAhead)")

    def close(self) -> bool:
        """Stop reading; returns whether the thread has ended (it is waited for up to ``join_timeout``)."""
        self._done = True
        thread = self._thread
        if thread is None:
            return True
        self._state.stop.set()
        self._state.slots.release()  # wakes a reader waiting for a slot
        thread.join(self.join_timeout)
        while True:  # drop what was read ahead
            try:
                self._state.queue.get_nowait()
            except queue.Empty:
                break
        return not thread.is_alive()

    @property
    def alive(self) -> bool:
        """Whether the background thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def __del__(self) -> None:
        # Dropped without close (a consumer that stopped early): the thread stops without a wait.
        try:
            if self._thread is not None and not self._done:
                self._state.stop.set()
                self._state.slots.release()
        except Exception:  # interpreter shutdown
            pass


class BackgroundError(Exception):
    """A call of a `SerialWorker` failed in the background; raised in the thread that submits.

    The message names what the call was on (its ``label``: a video's path) and the original
    exception; ``__cause__`` is the original, with its traceback. Deliberately not a subclass of the
    errors a caller handles per input (``ValueError``, ``OSError``, ...): a worker that failed
    skips every later call, so the run must stop rather than go on without writing.
    """


class _Stop:
    pass


class SerialWorker:
    """Runs submitted calls one after another in a background thread, at most ``max_pending`` at a time.

    Args:
        max_pending: the most calls submitted and not finished (the one running included);
            `submit` blocks while there are that many. 0: no thread, `submit` runs the call at once.
        name: the thread's name.

    A call that raises stops the worker: later calls are skipped, and every later `submit` or
    `wait` raises a `BackgroundError` naming the call's ``label``, caused by that exception.
    Calls should handle the errors they expect themselves.
    """

    def __init__(self, max_pending: int, name: str):
        if max_pending < 0:
            raise ValueError(f"SerialWorker needs max_pending >= 0, got {max_pending}")
        self.max_pending = max_pending
        self.name = name
        self.max_seen = 0  # the most calls that were ever pending at once
        self._slots = threading.Semaphore(max(max_pending, 1))
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = threading.Condition()
        self._pending = 0
        self._error: BaseException | None = None
        self._failed_on = ""
        self._skip = False
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def synchronous(self) -> bool:
        return self.max_pending == 0

    def _raise_error(self) -> None:
        error = self._error
        if error is not None:
            raise BackgroundError(
                f"{self._failed_on}: {type(error).__name__}: {error} (in the background thread {self.name!r})"
            ) from error

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if isinstance(job, _Stop):
                return
            fn, args, label = job
            try:
                if self._error is None and not self._skip:
                    fn(*args)
            except BaseException as error:  # given to the submitter, whatever it is
                self._failed_on = label or getattr(fn, "__qualname__", repr(fn))
                self._error = error
            finally:
                del fn, args, job
                self._slots.release()
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def submit(self, fn: Callable[..., Any], *args: Any, label: str = "") -> None:
        """Run ``fn(*args)`` after the calls submitted before it; blocks while ``max_pending`` are pending.

        Raises the exception of an earlier call that failed in the background.
        """
        self._raise_error()
        if self._closed:
            raise RuntimeError(f"{self.name}: submit() after close()")
        if self.synchronous:
            fn(*args)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        while not self._slots.acquire(timeout=_POLL):
            self._raise_error()
            if not self._thread.is_alive():
                raise RuntimeError(f"{self.name}: the background thread has ended")
        with self._idle:
            self._pending += 1
            self.max_seen = max(self.max_seen, self._pending)
        self._queue.put((fn, args, label))

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every submitted call has run (at most ``timeout`` seconds); returns whether they have.

        Raises the exception of a call that failed. Interruptible (Ctrl-C) in the main thread.
        """
        with self._idle:
            if timeout is None:
                while self._pending and (self._thread is not None and self._thread.is_alive()):
                    self._idle.wait(_POLL)
            else:
                self._idle.wait_for(lambda: not self._pending, timeout)
            done = not self._pending
        self._raise_error()
        return done

    def close(self, timeout: float | None = None, skip_pending: bool = False) -> bool:
        """Stop the thread once the submitted calls have run (or at once with ``skip_pending``),
        waiting at most ``timeout`` seconds; returns whether the thread has ended.

        Does not raise the error of a failed call (`wait` does).
        """
        self._closed = True
        thread = self._thread
        if thread is None:
            return True
        if skip_pending:
            self._skip = True
        self._queue.put(_Stop())
        thread.join(timeout)
        if thread.is_alive():
            self._skip = True  # it ends after the call it is in
        return not thread.is_alive()

    @property
    def alive(self) -> bool:
        """Whether the background thread is running."""
        return self._thread is not None and self._thread.is_alive()
