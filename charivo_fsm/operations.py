"""Tool handlers and tool-result sends are *operations* run by workers, so that one
that finishes without suspending does not pay for a task of its own:

* an operation is queued; the manager's one *free* worker (a task of the task
  group, spawned when needed, parked on an event when there is nothing to do)
  takes it and drives the operation's coroutine by hand, inside the worker's
  own cancel scope;
* if the coroutine returns at its first step (a handler that computes its
  result, a send into a buffer), that was all: its outcome goes to the core and
  the worker takes the next operation;
* if it suspends, the coroutine stays with the task it started in -- a
  coroutine that has suspended cannot be moved to another task, since what it
  waits on (an asyncio future, a trio trap, the cancel scopes it entered) is
  bound to that task.  The worker becomes that operation's task: its cancel
  scope now takes the operation's deadline (start time + timeout) and is what
  the core's cancel cancels, and other workers (as many as operations are
  queued, up to 64 at a time) are spawned to serve the queue.

So the time limit and cancellation of D8 hold as for a task per operation:
cancellation is delivered at the operation's first suspension at the latest,
and a deadline counts from the moment the operation started.  An operation
that was cancelled before it started, or has a zero timeout, runs inside cancel
scopes entered before its first step (exactly as a task of its own would).
Each operation runs in a copy of the context it was requested in, as a task
spawned at that moment would.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import sys
import time
import types
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel

from .core import (
    OpTimeout,
)
from .errors import (
    CharivoStateError,
)


def _loop_clock() -> Callable[[], float]:
    """``anyio.current_time`` of the running event loop, looked up once: on asyncio
    that is the loop's own ``time`` (what anyio reads, virtual under looptime)."""
    loop = asyncio._get_running_loop()
    if loop is not None:
        if getattr(loop.time, "__func__", None) is asyncio.BaseEventLoop.time:
            return time.monotonic  # what that method returns, without its frame
        try:
            # the same clock (read twice, so not necessarily the same reading)
            if abs(loop.time() - anyio.current_time()) < 1e-3:
                return loop.time
        except Exception:  # pragma: no cover - not anyio's asyncio loop after all
            pass
    return anyio.current_time


@types.coroutine
def _yield_to_asyncio() -> Generator[None, None, None]:
    """What ``asyncio.sleep(0)`` does: one trip through the event loop."""
    yield


def _loop_checkpoint() -> Callable[[], Awaitable[None]]:
    """``anyio.lowlevel.checkpoint`` of the running event loop, looked up once: on
    asyncio, ``asyncio.sleep(0)`` (what anyio awaits) without anyio's dispatch."""
    if asyncio._get_running_loop() is not None and asyncio.current_task() is not None:
        return _yield_to_asyncio
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:  # not in trio either
            pass
        else:
            checkpoint: Callable[[], Awaitable[None]] = trio.lowlevel.checkpoint
            return checkpoint
    return anyio.lowlevel.checkpoint


_FATAL = (KeyboardInterrupt, SystemExit)
"""What always propagates: the process is being stopped."""


def _handled_as_error(exc: BaseException) -> bool:
    """Whether ``exc`` (not an ``Exception``), raised by a tool handler or a transport
    call the engine awaited, is an error of that operation rather than something to
    propagate.

    * ``KeyboardInterrupt`` and ``SystemExit`` propagate;
    * a cancellation propagates only when the engine (or the caller's own scope)
      requested it: some cancel scope around the current task has been cancelled,
      which anyio reports as an effective deadline of minus infinity.  A
      cancellation nobody around us asked for (a handler that awaited a future
      something else cancelled, or re-raised a cancellation it caught) is an error;
    * any other ``BaseException`` (``GeneratorExit``, custom subclasses) is an error.
    """
    if isinstance(exc, _FATAL):
        return False
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        return anyio.current_effective_deadline() != -math.inf
    return True


class UnexpectedBaseException(Exception):
    """A tool handler or transport call raised a ``BaseException`` that is handled as
    an error of that operation (see :func:`_handled_as_error`); the original is the
    ``__cause__``."""


def _as_error(exc: BaseException, what: str) -> UnexpectedBaseException:
    """The error of an operation that raised a non-``Exception`` (see above)."""
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        detail = f"a cancellation the engine did not request ({type(exc).__name__})"
    else:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    error = UnexpectedBaseException(f"{what} raised {detail}")
    error.__cause__ = exc
    return error


def _op_error(raised: BaseException, fn: Callable[..., Any]) -> BaseException:
    """The error of the operation ``fn`` that raised ``raised``; ``raised`` itself is
    raised again when it must propagate (see :func:`_handled_as_error`)."""
    if isinstance(raised, Exception):
        return raised
    if not _handled_as_error(raised):
        raise raised
    return _as_error(raised, _op_name(fn))


def _op_name(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return f"transport {name}" if hasattr(fn, "__self__") else f"tool handler {name}"


if TYPE_CHECKING:
    from .manager import RealtimeManager


class _Op:
    """A tool handler or a tool-result send, run by a worker (see the module docs)."""

    __slots__ = (
        "args",
        "cancelled",
        "context",
        "fn",
        "scope",
        "started",
        "suspended",
        "timeout",
        "token",
    )

    def __init__(
        self,
        token: int,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        timeout: float,
        context: contextvars.Context,
    ) -> None:
        self.token = token
        self.fn = fn
        self.args = args
        self.timeout = timeout
        self.context = context
        self.cancelled = False  # the core cancelled it
        self.suspended = False  # its coroutine suspended (it owns its worker's task)
        self.scope: anyio.CancelScope | None = None  # what the core's cancel cancels
        self.started = 0.0


async def _awaiting(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


_CoroutineType = types.CoroutineType


def _coroutine_of(fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> Any:
    """``fn(*args)`` as a coroutine object (a plain awaitable is wrapped in one)."""
    awaitable = fn(*args)
    if type(awaitable) is types.CoroutineType:
        return awaitable
    return _awaiting(awaitable)


# A free worker yields to the event loop after this many operations in a row, so a
# burst of tool calls does not hold the loop for the whole burst.
_FAIR_BATCH = 32
# At most this many workers are spawned at once when an operation suspends and others
# are queued behind it.
_FAN_OUT = 64


def _enqueue(
    self: RealtimeManager,
    token: int,
    fn: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    timeout: float,
) -> None:
    """Queue an operation for the free worker (spawning one if there is none)."""
    tg = self._tg
    if tg is None:
        # Not running (after exit): nothing can be awaited any more.
        self._core.op_done(token, CharivoStateError("RealtimeManager is not running"))
        return
    op = _Op(token, fn, args, timeout, contextvars.copy_context())
    ready = self._ready
    if ready is None:
        ready = self._ready = deque()
    ready.append(op)
    self._ops[token] = op
    idle = self._idle
    if idle is not None:
        self._idle = None
        idle.set()
    elif not self._free:
        self._free = 1
        tg.start_soon(self._worker)


async def _worker(self: RealtimeManager) -> None:
    """Serve the queue of operations (see the module docs).

    A worker is spawned free (counted in ``_free``).  When an operation suspends in
    it, it becomes that operation's task and stops being free (``_handoff``); once
    the operation is over it serves the queue again if no other worker does, and
    ends otherwise.  A free worker that finds the queue empty while another free
    worker exists ends; the last one parks on ``_idle``.
    """
    ready = self._ready
    assert ready is not None
    clock = _loop_clock()
    checkpoint = _loop_checkpoint()
    first_step = self._first_step
    free = True  # counted in self._free
    running: _Op | None = None
    parked: anyio.Event | None = None
    try:
        while free:
            with anyio.CancelScope() as scope:
                served = 0
                while True:
                    if not ready:
                        if self._free > 1 or self._idle is not None:
                            free = False  # another free worker serves the queue
                            self._free -= 1
                            return
                        # Let the tasks that are ready run once before parking: a
                        # caller that waits for a result and then asks again finds
                        # this worker still free, and no wake-up is needed.
                        await checkpoint()
                        if ready:
                            continue
                        if self._free > 1 or self._idle is not None:
                            free = False
                            self._free -= 1
                            return
                        parked = self._idle = anyio.Event()
                        await parked.wait()
                        parked = None
                        continue
                    op = running = ready.popleft()
                    if op.cancelled or op.timeout <= 0:
                        await self._run_guarded(op)
                    else:
                        # The first step, in this task: most operations end there (and
                        # are finished by it).
                        op.started = clock()
                        step = op.context.run(first_step, op)
                        if step is not None:
                            await self._run_rest(op, step[0], step[1], scope)
                    running = None
                    if op.suspended:
                        free = False  # _handoff took it off the count
                        break
                    # (the scope was never an operation's: nothing has cancelled it)
                    served += 1
                    if served == _FAIR_BATCH:
                        served = 0
                        await checkpoint()
            if running is not None:
                # This worker's scope stopped the operation it had become the task
                # of (so it had suspended): its deadline passed, or the core
                # cancelled it.
                stopped, running = running, None
                free = False
                self._finish(stopped, OpTimeout(stopped.timeout), None)
            if not free and not self._free:
                free = True  # nobody serves the queue: take it back
                self._free = 1
    finally:
        if running is not None and running.suspended:
            free = False  # already taken off the count
        if free:
            self._free -= 1
            if parked is not None and self._idle is parked:
                self._idle = None


def _handoff(self: RealtimeManager) -> None:
    """A free worker's operation suspended: the worker is now that operation's task.
    Enough workers are made free to start the queued operations in the next round
    of the event loop (as tasks spawned for them would), up to ``_FAN_OUT``."""
    self._free -= 1
    tg = self._tg
    if not self._ready or tg is None:
        return
    idle = self._idle
    if idle is not None:
        self._idle = None
        idle.set()
    for _ in range(min(len(self._ready), _FAN_OUT) - self._free):
        self._free += 1
        tg.start_soon(self._worker)


def _first_step(self: RealtimeManager, op: _Op) -> tuple[Coroutine[Any, Any, Any], Any] | None:
    """Start ``op`` (in ``op.context``, which this runs in): its coroutine's first step.
    If that ends the coroutine, the outcome goes to the core (still in ``op.context``)
    and ``None`` is returned; if it suspends, the coroutine and what it yielded."""
    error: BaseException | None = None
    value: Any = None
    try:
        coroutine = op.fn(*op.args)
        if type(coroutine) is not _CoroutineType:  # a plain awaitable (see _coroutine_of)
            coroutine = _awaiting(coroutine)
        try:
            yielded = coroutine.send(None)
        except StopIteration as stop:
            value = stop.value
        else:
            return coroutine, yielded
    except BaseException as raised:
        error = _op_error(raised, op.fn)
    self._ops.pop(op.token, None)  # what _finish does, already in op.context
    if not op.cancelled:
        self._core.op_done(op.token, error, value)
        self._drain()
    return None


async def _run_rest(
    self: RealtimeManager,
    op: _Op,
    coroutine: Coroutine[Any, Any, Any],
    yielded: Any,
    scope: anyio.CancelScope,
) -> None:
    """The rest of ``op`` after its first step suspended (``scope``, the worker's,
    becomes its scope)."""
    error: BaseException | None = None
    value: Any = None
    try:
        value = await self._resume(op, coroutine, yielded, scope)
    except BaseException as raised:
        error = _op_error(raised, op.fn)
    self._finish(op, error, value)


async def _run_guarded(self: RealtimeManager, op: _Op) -> None:
    """Run ``op`` inside cancel scopes entered before its first step (an operation
    cancelled before it started, or with a zero timeout)."""
    error: BaseException | None = None
    value: Any = None
    scope = op.scope = anyio.CancelScope()
    if op.cancelled:
        scope.cancel()
    context = op.context
    with scope:
        try:
            with anyio.move_on_after(op.timeout) as bound:
                coroutine = context.run(_coroutine_of, op.fn, op.args)
                try:
                    yielded = context.run(coroutine.send, None)
                except StopIteration as stop:
                    value = stop.value
                else:
                    value = await self._resume(op, coroutine, yielded, None)
            if bound.cancelled_caught:
                raise OpTimeout(op.timeout)
        except BaseException as raised:
            error = _op_error(raised, op.fn)
    self._finish(op, error, value)


@types.coroutine
def _resume(
    self: RealtimeManager,
    op: _Op,
    coroutine: Coroutine[Any, Any, Any],
    yielded: Any,
    scope: anyio.CancelScope | None,
) -> Generator[Any, Any, Any]:
    """The rest of ``await coroutine`` after its first step suspended with
    ``yielded``, in ``op.context``: every value it yields goes to the event loop and
    every value or exception the loop sends back goes to it, as ``await`` does.

    The first step ran in this task, so this task stays the coroutine's: it stops
    serving the queue (``_handoff``), and ``scope`` (the worker's) takes the
    operation's deadline and the core's cancel.
    """
    context = op.context
    op.suspended = True
    self._handoff()
    if scope is not None:
        op.scope = scope
        if op.cancelled:
            scope.cancel()
        else:
            scope.deadline = op.started + op.timeout
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            coroutine.close()
            raise
        except BaseException as thrown:
            try:
                yielded = context.run(coroutine.throw, thrown)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = context.run(coroutine.send, sent)
            except StopIteration as stop:
                return stop.value


def _finish(self: RealtimeManager, op: _Op, error: BaseException | None, value: Any) -> None:
    self._ops.pop(op.token, None)  # (it is there unless the core cancelled it)
    if op.cancelled:
        return  # cancelled by the core: it has already forgotten the token
    op.context.run(self._complete, op.token, error, value)


def _complete(self: RealtimeManager, token: int, error: BaseException | None, value: Any) -> None:
    self._core.op_done(token, error, value)
    self._drain()
