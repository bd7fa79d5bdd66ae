"""Bookkeeping shared by every soak run: counters, violations and the checking emitter.

Everything here is bounded in memory: per-call entries are pruned once a call is
settled, violations are kept up to :data:`MAX_VIOLATIONS` (and counted beyond).
"""

from __future__ import annotations

import gc
import logging
import math
import random
import sys
import weakref
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from charivo_fsm import RealtimeManager

__all__ = [
    "MAX_VIOLATIONS",
    "MISSING",
    "PROVIDER_RESULT",
    "Checker",
    "CountingHandler",
    "RunStats",
    "call_key",
]

MAX_VIOLATIONS = 40
"""How many violation messages a run keeps (the count goes on)."""

MISSING = "<missing call id>"


def call_key(call_id: object) -> str:
    """The ledger key of a call id (a missing or empty id shares one key)."""
    return call_id if isinstance(call_id, str) and call_id else MISSING


# Per call key: [delivered to the manager, realtime:tool:call, terminal events,
# send_tool_result calls, virtual time of the last change].
_RECEIVED, _ANNOUNCED, _OUTCOMES, _SENDS, _TOUCHED = range(5)


class RunStats:
    """Counters of one soak run (all sessions of one backend together)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self.violations: list[str] = []
        self.violation_count = 0
        self.max_stop = 0.0
        self.max_exit = 0.0
        self.rig_errors: Counter[str] = Counter()
        self._calls: dict[str, list[float]] = {}
        # The leak check: a sample of the payloads emitted in the first half of the
        # measured run, per event kind (weak references: they must all be gone by
        # the end of the second half).
        self.first_half: tuple[float, float] | None = None
        self.sampled: dict[str, list[weakref.ref[Any]]] = {}
        self._shared: dict[str, int] = {}  # kind -> id of an object emitted again and again
        self._sample_every = 8
        self._seen: Counter[str] = Counter()

    # ------------------------------------------------------------ leak check

    def sample_payload(self, name: str, payload: Any) -> None:
        """Keep a weak reference to some payloads emitted in the first half."""
        window = self.first_half
        if window is None or not window[0] <= self.clock() < window[1]:
            return
        self._seen[name] += 1
        if self._seen[name] % self._sample_every:
            return
        refs = self.sampled.setdefault(name, [])
        if refs and refs[-1]() is payload:
            self._shared[name] = id(payload)  # a shared constant (tts:audio:end's payload)
            return
        try:
            refs.append(weakref.ref(payload))
        except TypeError:
            self._shared[name] = id(payload)

    def survivors(self) -> dict[str, tuple[int, int]]:
        """Per kind: (first-half payloads still alive, sampled), shared constants aside
        (a payload a module keeps as a constant, such as the zero lip-sync level)."""
        gc.collect()
        module_dicts = {id(vars(module)) for module in list(sys.modules.values())}
        result: dict[str, tuple[int, int]] = {}
        for name, refs in self.sampled.items():
            alive_count = 0
            for ref in refs:
                obj = ref()
                if obj is None or id(obj) == self._shared.get(name):
                    continue
                if any(id(holder) in module_dicts for holder in gc.get_referrers(obj)):
                    continue  # a module-level constant, emitted again and again
                alive_count += 1
            result[name] = (alive_count, len(refs))
        return result

    # ------------------------------------------------------------ violations

    def violation(self, message: str) -> None:
        self.violation_count += 1
        if len(self.violations) < MAX_VIOLATIONS:
            self.violations.append(f"[t={self.clock():.3f}] {message}")

    # ------------------------------------------------------------ tool ledger

    def _entry(self, key: str) -> list[float]:
        entry = self._calls.get(key)
        if entry is None:
            entry = self._calls[key] = [0, 0, 0, 0, 0.0]
        entry[_TOUCHED] = self.clock()
        return entry

    def tool_received(self, key: str) -> None:
        """A transport delivered a ``ToolCall`` to the manager's callback."""
        self.counts["tool calls received"] += 1
        self._entry(key)[_RECEIVED] += 1

    def tool_announced(self, key: str) -> None:
        self.counts["realtime:tool:call"] += 1
        entry = self._entry(key)
        entry[_ANNOUNCED] += 1
        if entry[_ANNOUNCED] > entry[_RECEIVED]:
            self.violation(f"tool call {key!r} announced more often than it was received")

    def tool_outcome(self, key: str, *, success: bool) -> None:
        self.counts["tool outcomes"] += 1
        self.counts["realtime:tool:result" if success else "realtime:tool:error"] += 1
        entry = self._entry(key)
        entry[_OUTCOMES] += 1
        if entry[_OUTCOMES] > entry[_ANNOUNCED]:
            self.violation(f"tool call {key!r} got a second outcome (D8)")

    def tool_sent(self, key: str) -> None:
        self.counts["send_tool_result calls"] += 1
        entry = self._entry(key)
        entry[_SENDS] += 1
        if entry[_SENDS] > entry[_RECEIVED]:
            self.violation(f"tool call {key!r}: send_tool_result called twice (D8)")

    def prune(self, horizon: float) -> None:
        """Forget settled calls untouched for ``horizon`` seconds (keeps memory flat)."""
        cutoff = self.clock() - horizon
        settled = [
            key
            for key, entry in self._calls.items()
            if entry[_TOUCHED] < cutoff
            and entry[_RECEIVED] == entry[_OUTCOMES] == entry[_ANNOUNCED]
        ]
        for key in settled:
            del self._calls[key]

    def unsettled_calls(self) -> list[str]:
        """Call keys whose received / announced / outcome counts differ."""
        return [
            f"{key}: received {int(e[_RECEIVED])}, announced {int(e[_ANNOUNCED])}, "
            f"outcomes {int(e[_OUTCOMES])}"
            for key, e in self._calls.items()
            if not e[_RECEIVED] == e[_ANNOUNCED] == e[_OUTCOMES]
        ]

    # ------------------------------------------------------------ timings

    def stop_took(
        self, seconds: float, label: str = "", bound: float = math.inf, trail: str = ""
    ) -> None:
        self.counts["stop_session calls"] += 1
        self.max_stop = max(self.max_stop, seconds)
        if seconds > bound:
            self.violation(f"{label}: stop_session took {seconds:.3f}s (bound {bound:g}s); {trail}")

    def exit_took(self, seconds: float) -> None:
        self.max_exit = max(self.max_exit, seconds)


_OUTSIDE_SESSION = frozenset(
    {
        "realtime:assistant:start",
        "realtime:assistant:delta",
        "realtime:assistant:done",
        "realtime:text:delta",
        "realtime:user:transcript",
        "realtime:usage",
        "realtime:reconnect:attempt",
        "realtime:reconnect:success",
        "realtime:reconnect:exhausted",
        "tts:audio:start",
        "tts:lipsync:update",
    }
)
"""Events that only a live (starting, active or stopping) session may emit."""


PROVIDER_RESULT = "provider-result"
"""Call-id prefix of ``ToolResult`` events a provider reports itself (passed through,
not outcomes of the manager's tool calls)."""

_LIVE = frozenset({"starting", "active", "stopping"})


class _ListenerBaseException(BaseException):
    """An emitter raising a BaseException that is not a process exit (D1 still holds)."""


class Checker:
    """The event emitter of one manager: feeds the ledger and checks D2 on the fly.

    Effects are executed after the core step that produced them, so the manager's
    ``session_id`` may already have moved on when an event is emitted; the checker
    reads session ids from ``realtime:session:start`` (the step that commits a start
    never ends it) and from usage payloads, and the session status from the
    ``realtime:state`` snapshots, which are taken when the event is emitted.
    """

    def __init__(
        self,
        stats: RunStats,
        label: str,
        *,
        rng: random.Random | None = None,
        fail_rate: float = 0.02,
    ) -> None:
        self.stats = stats
        self.label = label
        self.rng = rng
        self.fail_rate = fail_rate
        self.manager: RealtimeManager | None = None
        self.open_session = False
        self.open_id: str | None = None
        self.status = "idle"
        self.ended_ids: deque[str] = deque(maxlen=2)

    def emit(self, name: str, payload: Any) -> None:
        stats = self.stats
        stats.counts["emitted events"] += 1
        if name == "realtime:state":
            self.status = str(payload.state.session.status)
        elif name == "realtime:tool:call":
            stats.tool_announced(call_key(payload.call_id))
        elif name == "realtime:tool:result":
            if str(payload.call_id).startswith(PROVIDER_RESULT):
                stats.counts["provider tool results passed through"] += 1
            else:
                stats.tool_outcome(call_key(payload.call_id), success=True)
        elif name == "realtime:tool:error":
            stats.tool_outcome(call_key(payload.call_id), success=False)
        elif name == "realtime:session:start":
            self._started()
        elif name == "realtime:session:end":
            self._ended(payload.reason)
        elif name in _OUTSIDE_SESSION:
            self._inside(name, payload)
        stats.sample_payload(name, payload)
        if self.rng is not None and self.rng.random() < self.fail_rate:
            stats.counts["listener failures injected"] += 1
            if self.rng.random() < 0.3:
                stats.counts["fault: BaseException raised by a listener"] += 1
                raise _ListenerBaseException("listener raised a BaseException (injected)")
            raise RuntimeError("listener bug (injected)")  # D1: must change nothing

    def _inside(self, name: str, payload: Any) -> None:
        stats = self.stats
        if not self.open_session and self.status not in _LIVE:
            stats.violation(f"{self.label}: {name} emitted between sessions (D2)")
        if name != "realtime:usage":
            return
        sid = payload.session_id
        if sid is None or sid in self.ended_ids:
            stats.violation(f"{self.label}: usage for session {sid!r} after its end (D2)")
        elif self.open_session and self.open_id is not None and sid != self.open_id:
            stats.violation(f"{self.label}: usage for {sid} while {self.open_id} is open")

    def _started(self) -> None:
        stats = self.stats
        stats.counts["sessions started"] += 1
        sid = self.manager.session_id if self.manager is not None else None
        if self.open_session:
            stats.violation(f"{self.label}: session:start while a session is open (D2)")
        if sid is None or sid in self.ended_ids:
            stats.violation(f"{self.label}: session:start with session id {sid!r}")
        self.open_session = True
        self.open_id = sid

    def _ended(self, reason: str) -> None:
        stats = self.stats
        stats.counts["sessions ended"] += 1
        stats.counts[f"sessions ended ({reason})"] += 1
        if not self.open_session:
            stats.violation(f"{self.label}: session:end without a session:start (D2)")
        if self.open_id is not None:
            self.ended_ids.append(self.open_id)
        self.open_session = False
        self.open_id = None


class CountingHandler(logging.Handler):
    """Counts log records by their ``charivo`` event; keeps engine-bug reports."""

    BUG_MESSAGES = ("could not be handled", "reader failed", "handler failed")

    def __init__(self, stats: RunStats) -> None:
        super().__init__(logging.DEBUG)
        self.stats = stats

    def emit(self, record: logging.LogRecord) -> None:
        context = getattr(record, "charivo", None)
        event = context.get("event") if isinstance(context, dict) else None
        name = event if isinstance(event, str) else record.name
        self.stats.counts[f"log {name}"] += 1
        try:
            message = record.getMessage()
        except Exception:  # pragma: no cover - a broken record is itself a finding
            message = repr(record.msg)
        if record.name.startswith("charivo_fsm.testing"):
            if record.levelno >= logging.ERROR:
                self.stats.rig_errors[f"local server: {message[:80]}"] += 1
            return
        if any(fragment in message for fragment in self.BUG_MESSAGES):
            self.stats.violation(f"engine reported a bug: {message} {context!r}")
        if record.exc_info and record.exc_info[1] is not None:
            self.stats.violation(f"log record with a traceback: {message}")
