"""The core's refresh effects (D5, D17): a patch in flight, requests cached behind
it, a patch committed, refused or discarded by a stop, a reconnect or the end of the
session.

Each function here is a method of :class:`charivo_fsm.core.Core` (assigned in its
class body under the same name).  The rules of :mod:`charivo_fsm.core` hold here too.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .core_events import _RECONNECTING
from .effects import Patch
from .errors import CharivoError
from .payloads import ErrorPayload

if TYPE_CHECKING:
    from .core import Core


def start_patch(self: Core) -> None:
    config = self._effective()
    self._carry()
    self._pending = config
    self._last_error = None
    self._emit_state()
    self._log(
        logging.DEBUG,
        "patch.started",
        "Realtime session patch started",
        voice=config.voice,
        model=config.model,
    )
    token = self._patch_op = self._op(self._on_patch_ok, self._on_patch_failed)
    self.out.append(Patch(token, config))


def cache_update(self: Core) -> None:
    # Not patchable now.  While reconnecting, the waiting callers are served
    # by the reconnect (D17.4); otherwise they return at once (D17.5).
    if self.session.state == "active" and self.connection.state in _RECONNECTING:
        return
    self._settle_waiters(None)


def _on_patch_ok(self: Core, _value: Any) -> None:
    self._patch_op = None
    self.refresh.fire(self, "patch_ok")


def _on_patch_failed(self: Core, error: BaseException) -> None:
    self._patch_op = None
    self._input = self._transport_error(error, "session update")
    self.refresh.fire(self, "patch_failed")


def commit_patch(self: Core) -> None:
    self._accept_base()
    self._config = self._pending
    self._last_error = None
    self._sync_character_id()
    self._emit_state()
    config = self._config
    assert config is not None
    self._log(
        logging.INFO,
        "patch.succeeded",
        "Realtime session patch succeeded",
        voice=config.voice,
        model=config.model,
    )
    self._settle_waiters(self._carried)
    held, self._held_errors = self._held_errors, None
    for error in held or ():
        self._apply_error(error)


def fail_patch(self: Core) -> None:
    error: CharivoError = self._input
    # The provider refused these values: the base goes back to what it accepted
    # (requests made after this patch started stay pending on top of it), so a
    # later reconnect or session does not send the refused values again.
    self._base = self._accepted_base
    self._held_errors = None  # folded into this failure (D17.3)
    self._last_error = error
    self._emit("realtime:error", ErrorPayload(error))
    self._emit_state()
    self._log(logging.ERROR, "patch.failed", "Realtime session patch failed", error=error.message)
    self._settle_waiters(self._carried, error)


def discard_patch_for_stop(self: Core) -> None:
    self._cancel(self._patch_op)
    self._patch_op = None
    for _error in self._held_errors or ():
        self._drop("error held by a patch discarded by stop")
    self._held_errors = None


def discard_patch_for_reconnect(self: Core) -> None:
    self._cancel(self._patch_op)
    self._patch_op = None
    if self._held_errors:
        self._last_error = self._held_errors[-1]
    self._held_errors = None


def discard_patch_for_end(self: Core) -> None:
    self._cancel(self._patch_op)
    self._patch_op = None
    self._held_errors = None
