"""The core's tool calls (D8): validation, the handler's operation, its one outcome,
the result's send and the failure result, cancellation.

Each function here is a method of :class:`charivo_fsm.core.Core` (assigned in its
class body under the same name).  The rules of :mod:`charivo_fsm.core` hold here too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .effects import Emit, OpTimeout, Project, RunTool, SendToolResult, _tuple_new
from .errors import (
    CharivoError,
    CharivoStateError,
    CharivoTimeoutError,
    CharivoTransportError,
    CharivoValidationError,
)
from .events import (
    ToolCall,
)
from .model import (
    RealtimeState,
    RealtimeToolContext,
)
from .payloads import (
    ToolCallPayload,
    ToolErrorPayload,
    ToolResultPayload,
)
from .tools import check_tool_output, validate_tool_arguments

if TYPE_CHECKING:
    from .core import Core

_DEBUG = logging.DEBUG
_INFO = logging.INFO

# The most frequent objects of a tool call, built without the Python-level __init__ of
# their (frozen, slotted, unvalidated) attrs classes: the same objects.
_new = object.__new__
_call_name = ToolCallPayload.__dict__["name"].__set__
_call_args = ToolCallPayload.__dict__["args"].__set__
_call_id = ToolCallPayload.__dict__["call_id"].__set__
_result_name = ToolResultPayload.__dict__["name"].__set__
_result_output = ToolResultPayload.__dict__["output"].__set__
_result_id = ToolResultPayload.__dict__["call_id"].__set__
_context_character = RealtimeToolContext.__dict__["character"].__set__
_context_state = RealtimeToolContext.__dict__["state"].__set__
_context_id = RealtimeToolContext.__dict__["call_id"].__set__


class _ToolCallRecord:
    """Bookkeeping for one tool call id until its outcome and sends are done.

    The record is also what its pending operation (the handler, or a send) reports
    to: ``Core.op_done`` hands the outcome to ``Core._tool_op_done`` with the record,
    which goes on according to the phase.
    """

    __slots__ = ("call_id", "name", "output", "phase", "token")

    def __init__(self, name: str, call_id: str, phase: str) -> None:
        self.name = name
        self.call_id = call_id
        self.token = 0
        # running: the handler runs; sending: the success result is being sent;
        # failing: the outcome was emitted, the failure result is being sent.
        self.phase = phase
        self.output: Mapping[str, Any] | None = None  # the result being sent


def _on_tool_call(self: Core, event: ToolCall) -> None:
    name, call_id = event.name, event.call_id
    payload: ToolCallPayload = _new(ToolCallPayload)  # ToolCallPayload(name, args, call_id)
    _call_name(payload, name)
    _call_args(payload, event.args)
    _call_id(payload, call_id)
    out = self.out
    out.append(_tuple_new(Emit, ("realtime:tool:call", payload)))
    refusal: str | None = None
    if not call_id:
        refusal = f'Tool "{name}" is missing a call ID'
    elif self.session.state != "active":
        refusal = "Realtime session not active"
    elif self.connection.state != "connected":
        refusal = "Realtime session is reconnecting"
    elif call_id in self._calls:
        refusal = f'Tool call "{call_id}" is already running'
    if refusal is not None:
        self._tool_outcome_error(name, call_id, CharivoStateError(refusal))
        return
    assert call_id is not None
    entry = self.registry.get(name)
    if entry is None:
        error = CharivoValidationError(f'No realtime tool registered for "{name}"')
        self._tool_failed(name, call_id, error)
        return
    logger = self.logger
    if logger is None or logger.isEnabledFor(_DEBUG):
        message = "Realtime tool execution started"
        self._log(_DEBUG, "tool.started", message, name=name, call_id=call_id)
    try:
        args = validate_tool_arguments(name, entry.validator, event.args)
    except CharivoValidationError as invalid:
        self._tool_failed(name, call_id, invalid)
        return
    registration = entry.registration
    timeout = registration.timeout
    if timeout is None:
        timeout = self._default_tool_timeout
    context: RealtimeToolContext = _new(RealtimeToolContext)  # (character, state, call_id)
    _context_character(context, self._character)
    _context_state(context, self._tool_snapshot())
    _context_id(context, call_id)
    record = self._calls[call_id] = _ToolCallRecord(name, call_id, "running")
    token = self._next_token = self._next_token + 1  # what _tool_op does
    record.token = token
    self._ops[token] = record
    out.append(RunTool(token, name, registration.handler, args, context, timeout))


def _tool_snapshot(self: Core) -> RealtimeState:
    """``snapshot()``, the same object again while nothing it shows has changed (a
    RealtimeState is immutable): the session snapshot (rebuilt whenever the session,
    its config or character changes), the connection and response states, the parts
    of the response text (appended to, or replaced by a new list) and the last error.
    """
    cached = self._tool_state
    parts = self._parts
    if (
        cached is not None
        and cached[0] is self._session_snap
        and cached[1] is parts
        and cached[2] == len(parts)
        and cached[3] == self.connection.state
        and cached[4] == self.response.state
        and cached[5] is self._last_error
    ):
        state: RealtimeState = cached[6]
        return state
    state = self.snapshot()  # (fills the session snapshot; may join the parts)
    parts = self._parts
    self._tool_state = (
        self._session_snap,
        parts,
        len(parts),
        self.connection.state,
        self.response.state,
        self._last_error,
        state,
    )
    return state


def _tool_op(self: Core, record: _ToolCallRecord) -> int:
    """A token for the operation of ``record``'s current phase (see op_done)."""
    self._next_token += 1
    token = record.token = self._next_token
    self._ops[token] = record
    return token


def _tool_op_done(
    self: Core, record: _ToolCallRecord, error: BaseException | None, value: Any
) -> None:
    call_id, phase = record.call_id, record.phase
    if phase == "running":
        if error is not None:
            self._on_tool_raised(call_id, error)
            return
        # The handler returned: its result, if valid, is sent.
        try:
            checked = check_tool_output(record.name, value)
        except CharivoValidationError as invalid:
            self._tool_failed(record.name, call_id, invalid)
            return
        record.phase = "sending"
        record.output = checked
        token = self._next_token = self._next_token + 1  # what _tool_op does
        record.token = token
        self._ops[token] = record
        self.out.append(_tuple_new(SendToolResult, (token, call_id, checked)))
    elif phase == "sending":
        if error is not None:
            self._on_tool_send_failed(call_id, error)
            return
        # The result was sent: the call succeeded.
        name, output = record.name, record.output
        del self._calls[call_id]
        out = self.out
        payload: ToolResultPayload = _new(ToolResultPayload)  # (name, output, call_id)
        _result_name(payload, name)
        _result_output(payload, output)
        _result_id(payload, call_id)
        out.append(_tuple_new(Emit, ("realtime:tool:result", payload)))
        if self.projecting:
            out.append(_tuple_new(Project, (name, output, call_id)))
        logger = self.logger
        if logger is None or logger.isEnabledFor(_INFO):
            message = "Realtime tool execution succeeded"
            self._log(_INFO, "tool.succeeded", message, name=name, call_id=call_id)
    elif error is None:  # failing
        self._on_tool_send_done(call_id)
    else:
        self._on_failure_send_failed(record.name, call_id, error)


def _tool_outcome_error(self: Core, name: str, call_id: str | None, error: CharivoError) -> None:
    self._log(
        logging.WARNING,
        "tool.failed",
        "Realtime tool execution failed",
        name=name,
        call_id=call_id,
        error=error.message,
    )
    self._emit("realtime:tool:error", ToolErrorPayload(name, error, call_id))


def _tool_failed(
    self: Core, name: str, call_id: str, error: CharivoError, sent: str | None = None
) -> None:
    """The failure path: one tool:error, one failure result sent (D8).

    The model gets ``{"success": False, "error": sent}``; ``sent`` defaults to the
    error's message (our own words: validation, timeout, a CharivoError the
    handler raised on purpose)."""
    self._tool_outcome_error(name, call_id, error)
    record = self._calls[call_id] = _ToolCallRecord(name, call_id, "failing")
    token = self._tool_op(record)
    message = error.message if sent is None else sent
    self.out.append(SendToolResult(token, call_id, {"success": False, "error": message}))


def _on_tool_raised(self: Core, call_id: str, error: BaseException) -> None:
    record = self._calls[call_id]
    failure: CharivoError
    if isinstance(error, OpTimeout):
        failure = CharivoTimeoutError(
            f'Realtime tool "{record.name}" timed out after {error.seconds:g}s'
        )
    elif isinstance(error, CharivoError):
        failure = error
    else:
        # An unexpected exception: its text may hold anything (paths, secrets), so
        # the model gets a generic message unless tool_error_detail is set; the
        # detail stays in realtime:tool:error and the log.
        text = str(error)
        failure = CharivoError(text if text.strip() else type(error).__name__, cause=error)
        if not self._tool_error_detail:
            self._tool_failed(
                record.name, call_id, failure, f'Realtime tool "{record.name}" failed'
            )
            return
    self._tool_failed(record.name, call_id, failure)


def _on_tool_send_failed(self: Core, call_id: str, error: BaseException) -> None:
    record = self._calls.pop(call_id)
    failure = self._transport_error(error, "send_tool_result")
    if not isinstance(failure, CharivoTransportError | CharivoTimeoutError):
        failure = CharivoTransportError(failure.message, cause=failure)
    self._tool_outcome_error(record.name, call_id, failure)


def _on_tool_send_done(self: Core, call_id: str) -> None:
    self._calls.pop(call_id, None)


def _on_failure_send_failed(self: Core, name: str, call_id: str, error: BaseException) -> None:
    self._calls.pop(call_id, None)
    self._log(
        logging.WARNING,
        "tool.failed",
        "Realtime tool failure result could not be sent",
        name=name,
        call_id=call_id,
        error=self._transport_error(error, "send_tool_result").message,
    )


def _cancel_tools(self: Core, why: str) -> None:
    calls, self._calls = self._calls, {}
    for call_id, record in calls.items():
        self._cancel(record.token)
        if record.phase != "failing":
            self._tool_outcome_error(
                record.name,
                call_id,
                CharivoStateError(f'Realtime tool "{record.name}" was cancelled: {why}'),
            )


def running_tool_calls(self: Core) -> int:
    return len(self._calls)
