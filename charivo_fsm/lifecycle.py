"""The manager's transport lifecycle calls (connect, update_session, recover,
disconnect): they never overlap and run in the order the core asked for them
(D18.6), each bounded by ``transport_timeout``.

Each function here is a method of :class:`charivo_fsm.manager.RealtimeManager`
(assigned in its class body under the same name).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio

from .effects import Connect, Disconnect, OpTimeout, Patch, Recover


class _Turn:
    """A lifecycle call's place in line (see ``RealtimeManager._queue_lifecycle``)."""

    __slots__ = ("event", "ready")

    def __init__(self, *, ready: bool) -> None:
        self.ready = ready
        self.event: anyio.Event | None = None


if TYPE_CHECKING:
    from .manager import RealtimeManager


def _queue_lifecycle(self: RealtimeManager) -> _Turn:
    """Take a turn for a lifecycle call, in the order the core asked for them.

    Transport lifecycle calls never overlap (D18.6) and run in effect order,
    whatever order the event loop starts their tasks in.
    """
    queue = self._lifecycle_queue
    if queue is None:
        queue = self._lifecycle_queue = []
    turn = _Turn(ready=not queue)
    queue.append(turn)
    return turn


def _release_lifecycle(self: RealtimeManager, turn: _Turn) -> None:
    queue = self._lifecycle_queue
    if queue is None or turn not in queue:
        return
    was_head = queue[0] is turn
    queue.remove(turn)
    if was_head and queue:
        head = queue[0]
        head.ready = True
        if head.event is not None:
            head.event.set()


async def _lifecycle(
    self: RealtimeManager, turn: _Turn, call: Callable[..., Awaitable[None]], *args: Any
) -> None:
    try:
        if not turn.ready:
            turn.event = anyio.Event()
            await turn.event.wait()
        with anyio.move_on_after(self._transport_timeout) as bound:
            await call(*args)
        if bound.cancelled_caught:
            raise OpTimeout(self._transport_timeout)
    finally:
        self._release_lifecycle(turn)


def _do_connect(self: RealtimeManager, effect: Connect) -> None:
    self._spawn_lifecycle(effect.token, self._transport.connect, effect.config)


def _do_patch(self: RealtimeManager, effect: Patch) -> None:
    self._spawn_lifecycle(effect.token, self._transport.update_session, effect.config)


def _do_recover(self: RealtimeManager, effect: Recover) -> None:
    self._spawn_lifecycle(effect.token, self._transport.recover, effect.config)


def _do_disconnect(self: RealtimeManager, effect: Disconnect) -> None:
    self._spawn_lifecycle(effect.token, self._transport.disconnect)


def _spawn_lifecycle(
    self: RealtimeManager, token: int, call: Callable[..., Awaitable[None]], *args: Any
) -> None:
    turn = self._queue_lifecycle() if self._tg is not None else _Turn(ready=True)
    self._spawn(token, self._lifecycle, turn, call, *args)
