"""The core's connection effects: a link lost while connecting, the reconnect loop
(D6: backoff with jitter, recover, retry, exhaust), stop and clean-up disconnects.

Each function here is a method of :class:`charivo_fsm.core.Core` (assigned in its
class body under the same name), named in the declared machines of
:mod:`charivo_fsm.machines` or called by the core; the rules of
:mod:`charivo_fsm.core` hold here too (no I/O, effects appended to ``Core.out``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .effects import Disconnect, OpTimeout, Recover, Sleep
from .errors import (
    CharivoTransportError,
    to_charivo_error,
)
from .payloads import (
    ReconnectAttemptPayload,
    ReconnectExhaustedPayload,
    ReconnectSuccessPayload,
)

if TYPE_CHECKING:
    from .core import Core


def note_lost_while_connecting(self: Core) -> None:
    self._cause, self._lost_error = self._input
    self._log(
        logging.WARNING,
        "reconnect.started",
        "Realtime connection lost while starting",
        cause=self._cause,
        connection="connecting",
    )


def begin_reconnect(self: Core) -> None:
    if self.session.state == "active":
        self._cause, self._lost_error = self._input
        self._begin_reconnect_loop()
    # connect_ok from connecting_lost: commit_start begins the loop after
    # the session has committed (so session:start comes first, D3).


def _begin_reconnect_loop(self: Core) -> None:
    self.refresh.fire(self, "lost")
    if self._lost_error is not None:
        self._last_error = to_charivo_error("transport", self._lost_error)
        self._lost_error = None
    self.response.fire(self, "lost")
    self.audio.fire(self, "reset")
    self._emit_state()
    self._log(
        logging.WARNING,
        "reconnect.started",
        "Realtime reconnect started",
        cause=self._cause,
        connection="connecting",
    )
    self._cancel_tools("the connection was lost")
    self._attempt = 0
    self._recover_error = None
    self._loop_started = self._clock()
    self._next_attempt()


def _next_attempt(self: Core) -> None:
    self._attempt += 1
    delay = self._delays[self._attempt - 1]
    if self._jitter:
        # Bounded jitter: the configured delay scaled by a factor in
        # [1 - jitter, 1 + jitter], so sessions dropped together do not retry
        # in lockstep.
        delay *= 1.0 + self._jitter * (2.0 * self._random() - 1.0)
    delay_ms = round(delay * 1000)
    self._emit(
        "realtime:reconnect:attempt",
        ReconnectAttemptPayload(self._attempt, delay_ms, self._cause),
    )
    self._log(
        logging.INFO,
        "reconnect.attempt",
        "Realtime reconnect attempt",
        attempt=self._attempt,
        delay_ms=delay_ms,
        cause=self._cause,
    )
    token = self._link_op = self._op(self._on_backoff_elapsed, self._on_backoff_elapsed)
    self.out.append(Sleep(token, delay))


def _on_backoff_elapsed(self: Core, _value: Any) -> None:
    self._link_op = None
    self.connection.fire(self, "backoff_elapsed")


def start_recover(self: Core) -> None:
    config = self._effective()
    self._carry()
    self._pending = config
    token = self._link_op = self._op(self._on_recover_ok, self._on_recover_failed)
    self.out.append(Recover(token, config))


def _on_recover_ok(self: Core, _value: Any) -> None:
    self._link_op = None
    self.connection.fire(self, "recover_ok")


def _on_recover_failed(self: Core, error: BaseException) -> None:
    self._link_op = None
    self._recover_error = self._transport_error(error, "recover")
    self._recover_cause = self._recover_error if isinstance(error, OpTimeout) else error
    self.connection.fire(self, "recover_failed")


def _total_ms(self: Core) -> int:
    return round((self._clock() - self._loop_started) * 1000)


def commit_recover(self: Core) -> None:
    self._accept_base()
    self._config = self._pending
    self._last_error = None
    self._sync_character_id()
    self._emit_state()
    total = self._total_ms()
    self._emit(
        "realtime:reconnect:success",
        ReconnectSuccessPayload(self._attempt, total, self._cause),
    )
    self._log(
        logging.INFO,
        "reconnect.succeeded",
        "Realtime reconnect succeeded",
        attempts=self._attempt,
        total_ms=total,
        cause=self._cause,
    )
    self._settle_waiters(self._carried)
    self._refresh_if_owed()


def retry_recover(self: Core) -> None:
    self._last_error = self._recover_error
    self._emit_state()
    self._next_attempt()


def exhaust_reconnect(self: Core) -> None:
    last = self._recover_error
    error = CharivoTransportError(
        f"Realtime reconnect exhausted after {self._attempt} attempts"
        + (f": {last.message}" if last is not None else ""),
        cause=self._recover_cause,
    )
    self._last_error = error
    total = self._total_ms()
    self._emit(
        "realtime:reconnect:exhausted",
        ReconnectExhaustedPayload(self._attempt, total, self._cause, error),
    )
    self._log(
        logging.ERROR,
        "reconnect.exhausted",
        "Realtime reconnect exhausted",
        attempts=self._attempt,
        total_ms=total,
        cause=self._cause,
        error=error.message,
    )
    self._cleanup_disconnect()
    self.session.fire(self, "exhausted")


def request_disconnect(self: Core) -> None:
    self._cancel(self._connect_op)
    self._connect_op = None
    self._cancel(self._link_op)
    self._link_op = None
    cleanup = self._cleanup_op
    if cleanup is not None and cleanup in self._ops:
        # A clean-up disconnect is still pending (the start being cancelled was
        # waiting for it): that call closes the link, so the stop adopts its
        # outcome instead of queueing a second disconnect behind it (D3, D4).
        self._ops[cleanup] = (self._on_disconnect_ok, self._on_disconnect_failed)
        self._cleanup_op = None
        self._disconnect_op = cleanup
        return
    token = self._disconnect_op = self._op(self._on_disconnect_ok, self._on_disconnect_failed)
    self.out.append(Disconnect(token, False))


def cleanup_link(self: Core) -> None:
    self._cancel(self._connect_op)
    self._connect_op = None
    self._cancel(self._link_op)
    self._link_op = None
    self._cleanup_disconnect()


def _cleanup_disconnect(self: Core) -> None:
    if self._cleanup_op is not None:
        # One is still pending.  Lifecycle calls run one at a time in effect
        # order (D18.6), so nothing asked for after it (a start's connect, a
        # recover) has reached the transport: that pending call closes every
        # link there is, and clean-ups merge instead of queueing behind each
        # other (a stop adopts it, D4, D15).
        return
    token = self._cleanup_op = self._op(self._on_cleanup_ok, self._on_cleanup_failed)
    self.out.append(Disconnect(token, True))


def _on_cleanup_ok(self: Core, _value: Any) -> None:
    self._cleanup_op = None


def _on_cleanup_failed(self: Core, error: BaseException) -> None:
    self._cleanup_op = None
    self._log(
        logging.WARNING,
        "transport.error",
        "Realtime clean-up disconnect failed",
        error=self._transport_error(error, "disconnect").message,
    )
