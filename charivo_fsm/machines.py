"""The lifecycle machines, declared once with ``transitions``.

Rules of this file:

* Each lifecycle (session, connection, refresh, response, audio) is declared
  exactly once, at import time, as a ``transitions.Machine`` with
  ``auto_transitions=False``.  That declaration is the single source of truth:
  the engine executes it, the diagrams are drawn from it and the table
  properties are checked against it.
* Guards are ``conditions``/``unless`` names and effects are ``after`` names.
  Both name methods of the core (:class:`charivo_fsm.core.Core`); they are
  resolved once, when the core class is bound to the declarations.
* A transition whose ``dest`` is ``None`` is an explicit "stay" (the input is
  accepted and handled, often by dropping it with a log line).  A (state,
  trigger) pair that no transition accepts is a *refusal*: :meth:`Runner.fire`
  returns ``False`` and the caller turns that into a named error.
* Executing a declared machine per manager must be cheap (thousands of
  managers per process, microseconds per event), so a manager never builds a
  ``transitions.Machine``: :meth:`MachineSpec.bind` turns the declaration into a
  flat ``(state, trigger) -> candidates`` table and compiles every entry of it
  into one *step* function (the declared guards, destination and effects of
  that entry, in declaration order, and nothing else); :class:`Runner` (two
  slots) looks the step up by state and trigger and calls it.  Every input,
  including the frequent ones (a text delta while responding), goes through
  the step compiled from its declaration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from operator import attrgetter
from typing import Any

import attrs
from transitions import Machine

__all__ = [
    "AUDIO",
    "CONNECTION",
    "MACHINES",
    "REFRESH",
    "RESPONSE",
    "SESSION",
    "Edge",
    "MachineSpec",
    "Runner",
]


@attrs.frozen(slots=True)
class Edge:
    """One declared transition, as read back from the ``transitions`` machine."""

    trigger: str
    source: str
    dest: str | None  # None: stay in ``source`` (an internal transition)
    conditions: tuple[str, ...]  # guards that must hold
    unless: tuple[str, ...]  # guards that must not hold
    effects: tuple[str, ...]  # core methods run after the state is written

    @property
    def guard_label(self) -> str:
        parts = list(self.conditions) + [f"not {name}" for name in self.unless]
        return " and ".join(parts)


# A compiled candidate: (conditions, unless, dest, effects) with the names
# resolved to plain functions of the core.
_Fn = Callable[[Any], Any]
_Candidate = tuple[tuple[_Fn, ...], tuple[_Fn, ...], str | None, tuple[_Fn, ...]]
# A compiled (state, trigger) entry: takes the runner and the core, applies the
# first candidate whose guards hold, returns whether one did.
_Step = Callable[["Runner", Any], bool]
# The same entry compiled for a caller that fires one trigger often (see
# ``MachineSpec.steps``): takes the core only (the runner is the core's attribute
# named after the machine); returns False when no guard holds, anything else when
# it applied a transition.
_DirectStep = Callable[[Any], Any]


class MachineSpec:
    """A declared machine: its ``transitions.Machine`` plus the compiled table."""

    def __init__(
        self,
        name: str,
        states: Sequence[str],
        initial: str,
        transitions: Sequence[Mapping[str, Any]],
        *,
        public: Mapping[str, str] | None = None,
        terminal: Sequence[str] = (),
        doc: str = "",
    ) -> None:
        self.name = name
        self.doc = doc
        self.initial = initial
        self.terminal = tuple(terminal)
        # ``model=None``: the declaration holds no model; managers run the
        # compiled table instead (see the module docstring).
        self.machine = Machine(
            model=None,
            states=list(states),
            transitions=[dict(t) for t in transitions],
            initial=initial,
            auto_transitions=False,
            send_event=False,
        )
        self.states: tuple[str, ...] = tuple(self.machine.states)
        self.public: Mapping[str, str] = dict(public or {s: s for s in self.states})
        self.edges: tuple[Edge, ...] = tuple(self._read_edges())
        self.triggers: tuple[str, ...] = tuple(self.machine.events)
        self._table: dict[tuple[str, str], tuple[_Candidate, ...]] = {}
        # state -> trigger -> step (a plain dict: looked up on every input); a state
        # or trigger missing from it accepts nothing.
        self._steps: dict[str, dict[str, _Step]] = {}
        # trigger -> state -> direct step: the same entries, for a caller that fires
        # one trigger often (see :meth:`steps`); refilled in place by :meth:`bind`.
        self._by_trigger: dict[str, dict[str, _DirectStep]] = {t: {} for t in self.triggers}

    def _read_edges(self) -> Iterator[Edge]:
        for trigger, event in self.machine.events.items():
            for source, items in event.transitions.items():
                for item in items:
                    yield Edge(
                        trigger=trigger,
                        source=source,
                        dest=item.dest,
                        conditions=tuple(str(c.func) for c in item.conditions if c.target),
                        unless=tuple(str(c.func) for c in item.conditions if not c.target),
                        effects=tuple(str(name) for name in item.after),
                    )

    def names(self) -> set[str]:
        """Every guard and effect name the declaration uses."""
        found: set[str] = set()
        for edge in self.edges:
            found.update(edge.conditions, edge.unless, edge.effects)
        return found

    def bind(self, owner: type) -> None:
        """Resolve guard and effect names to functions of ``owner``."""
        missing = sorted(n for n in self.names() if not callable(getattr(owner, n, None)))
        if missing:
            raise TypeError(f"{owner.__name__} lacks {self.name} machine callbacks: {missing}")
        table: dict[tuple[str, str], list[_Candidate]] = {}
        for edge in self.edges:
            candidate: _Candidate = (
                tuple(getattr(owner, n) for n in edge.conditions),
                tuple(getattr(owner, n) for n in edge.unless),
                edge.dest,
                tuple(getattr(owner, n) for n in edge.effects),
            )
            table.setdefault((edge.source, edge.trigger), []).append(candidate)
        self._table = {key: tuple(value) for key, value in table.items()}
        steps: dict[str, dict[str, _Step]] = {state: {} for state in self.states}
        for by_state in self._by_trigger.values():
            by_state.clear()
        runner_of = attrgetter(self.name)
        for (source, trigger), candidates in self._table.items():
            step = _compile_step(candidates)
            steps.setdefault(source, {})[trigger] = step
            direct = _compile_direct(candidates, step, runner_of)
            self._by_trigger.setdefault(trigger, {})[source] = direct
        self._steps = steps

    def steps(self, trigger: str) -> Mapping[str, _DirectStep]:
        """state -> the compiled step of ``trigger`` in that state, to be called with
        the core alone (a state missing from it refuses the trigger).

        For the most frequent inputs: ``step(core)`` is
        ``getattr(core, spec.name).fire(core, trigger)`` without the call of ``fire``
        (and without a step of its own for an entry that only runs one effect: the
        step is that effect); it returns False when no guard holds.  The mapping stays
        the same object (:meth:`bind` refills it), so it may be looked up once."""
        return self._by_trigger.setdefault(trigger, {})

    def accepts(self, state: str, trigger: str) -> bool:
        """Whether any transition is declared for (state, trigger), guards aside."""
        return (state, trigger) in self._table

    def refusal(self, state: str, trigger: str) -> str:
        """Why (state, trigger) is refused, in words (for errors and logs)."""
        if (state, trigger) in self._table:
            return f"the {self.name} machine refuses {trigger!r} in state {state!r}: no guard holds"
        return f"the {self.name} machine does not accept {trigger!r} in state {state!r}"

    def runner(self) -> Runner:
        return Runner(self)


class Runner:
    """The per-manager execution of one declared machine: a state and a table."""

    __slots__ = ("spec", "state")

    def __init__(self, spec: MachineSpec) -> None:
        self.spec = spec
        self.state = spec.initial

    @property
    def public(self) -> str:
        return self.spec.public[self.state]

    def fire(self, core: Any, trigger: str) -> bool:
        """Take the first declared transition whose guards hold.

        The new state is written before the effects run.  Returns ``False``
        (and changes nothing) when the machine refuses the trigger.
        """
        try:
            step = self.spec._steps[self.state][trigger]
        except KeyError:  # not declared for this state (or an undeclared state)
            return False
        return step(self, core)

    def __repr__(self) -> str:
        return f"<{self.spec.name} machine in {self.state!r}>"


def _accept(runner: Runner, core: Any) -> bool:
    return True


def _accept_direct(core: Any) -> bool:
    return True


def _compile_direct(
    candidates: tuple[_Candidate, ...], step: _Step, runner_of: Callable[[Any], Runner]
) -> _DirectStep:
    """The entry ``candidates`` (compiled as ``step``) as a step of the core alone."""
    if len(candidates) == 1 and not candidates[0][0] and not candidates[0][1]:
        _conditions, _unless, dest, effects = candidates[0]
        if dest is None and not effects:
            return _accept_direct
        if dest is None and len(effects) == 1:
            return effects[0]  # staying and running one effect: that effect is the step
        if dest is not None and len(effects) == 1:
            target: str = dest
            (first,) = effects

            def move_one(core: Any) -> bool:
                runner_of(core).state = target
                first(core)
                return True

            return move_one

    def direct(core: Any) -> bool:
        return step(runner_of(core), core)

    return direct


def _compile_step(candidates: tuple[_Candidate, ...]) -> _Step:
    """One function for one (state, trigger) entry of the table.

    The common shapes (a single unguarded candidate with no, one or several
    effects, staying or moving) get a function without loops or guard checks;
    anything guarded walks its candidates in declaration order.  Either way the
    new state is written before the effects run, exactly as declared.
    """
    if len(candidates) == 1 and not candidates[0][0] and not candidates[0][1]:
        _conditions, _unless, dest, effects = candidates[0]
        if dest is None:
            if not effects:
                return _accept
            if len(effects) == 1:
                (only,) = effects

                def stay_one(runner: Runner, core: Any) -> bool:
                    only(core)
                    return True

                return stay_one

            def stay_many(runner: Runner, core: Any) -> bool:
                for effect in effects:
                    effect(core)
                return True

            return stay_many
        target: str = dest
        if not effects:

            def move(runner: Runner, core: Any) -> bool:
                runner.state = target
                return True

            return move
        if len(effects) == 1:
            (first,) = effects

            def move_one(runner: Runner, core: Any) -> bool:
                runner.state = target
                first(core)
                return True

            return move_one

        def move_many(runner: Runner, core: Any) -> bool:
            runner.state = target
            for effect in effects:
                effect(core)
            return True

        return move_many

    def guarded(runner: Runner, core: Any) -> bool:
        for conditions, unless, dest, effects in candidates:
            held = True
            for guard in conditions:
                if not guard(core):
                    held = False
                    break
            if held:
                for guard in unless:
                    if guard(core):
                        held = False
                        break
            if held:
                if dest is not None:
                    runner.state = dest
                for effect in effects:
                    effect(core)
                return True
        return False

    return guarded


def _t(
    trigger: str,
    source: str | Sequence[str],
    dest: str | None,
    *,
    when: str | Sequence[str] = (),
    unless: str | Sequence[str] = (),
    do: str | Sequence[str] = (),
) -> dict[str, Any]:
    def seq(value: str | Sequence[str]) -> list[str]:
        return [value] if isinstance(value, str) else list(value)

    return {
        "trigger": trigger,
        "source": seq(source),
        "dest": dest,
        "conditions": seq(when),
        "unless": seq(unless),
        "after": seq(do),
    }


# --------------------------------------------------------------------------
# Session: what the user started and what ended it.
# --------------------------------------------------------------------------
SESSION = MachineSpec(
    "session",
    states=["idle", "starting", "active", "cancelling", "stopping", "stopped"],
    initial="idle",
    public={
        "idle": "idle",
        "starting": "starting",
        "active": "active",
        "cancelling": "stopping",
        "stopping": "stopping",
        "stopped": "stopped",
    },
    doc=(
        "start_session connects; a stop during the start wins (cancelling); a live "
        "session ends by the user (stopping), the remote side, or an exhausted "
        "reconnect. A session.ended that belongs to a lost link is ignored."
    ),
    transitions=[
        _t("start", ["idle", "stopped"], "starting", do="begin_start"),
        _t("connect_ok", "starting", "active", do="commit_start"),
        _t("connect_failed", "starting", "stopped", do="fail_start"),
        _t("remote_end", "starting", "stopped", do="fail_start_remote"),
        _t("remote_end", "active", None, when="reconnecting", do="drop_input"),
        _t("remote_end", "active", "stopped", unless="reconnecting", do="end_remote"),
        _t("remote_end", ["idle", "stopping", "cancelling", "stopped"], None, do="drop_input"),
        _t("stop", "starting", "cancelling", do="cancel_start"),
        _t("stop", "active", "stopping", do="begin_stop"),
        _t("stop", ["stopping", "cancelling"], None, do="join_stop"),
        _t("stop", ["idle", "stopped"], None, do="stop_noop"),
        _t("disconnect_ok", "stopping", "stopped", do="finish_stop"),
        _t("disconnect_ok", "cancelling", "stopped", do="finish_cancel"),
        _t("disconnect_failed", "stopping", "stopped", do="fail_stop"),
        _t("disconnect_failed", "cancelling", "stopped", do="fail_cancel"),
        _t("exhausted", "active", "stopped", do="fail_exhausted"),
    ],
)

# --------------------------------------------------------------------------
# Connection: the link, including the reconnect loop (backoff/recovering).
# --------------------------------------------------------------------------
CONNECTION = MachineSpec(
    "connection",
    states=[
        "idle",
        "connecting",
        "connecting_lost",
        "connected",
        "backoff",
        "recovering",
        "disconnecting",
        "error",
    ],
    initial="idle",
    public={
        "idle": "idle",
        "connecting": "connecting",
        "connecting_lost": "connecting",
        "connected": "connected",
        "backoff": "connecting",
        "recovering": "connecting",
        "disconnecting": "disconnecting",
        "error": "error",
    },
    doc=(
        "connect opens the link; a loss while connecting is remembered and starts a "
        "reconnect as soon as the start commits; a loss while connected starts the "
        "reconnect loop (backoff, then recover, per configured delay) unless a stop "
        "is closing the link; a stop cancels any pending connect, sleep or recover."
    ),
    transitions=[
        _t("open", ["idle", "error"], "connecting"),
        _t("lost", "connecting", "connecting_lost", do="note_lost_while_connecting"),
        _t("lost", "connected", "backoff", do="begin_reconnect"),
        _t(
            "lost",
            ["idle", "connecting_lost", "backoff", "recovering", "disconnecting", "error"],
            None,
            do="drop_input",
        ),
        _t("connect_ok", "connecting", "connected"),
        _t("connect_ok", "connecting_lost", "backoff", do="begin_reconnect"),
        _t("connect_failed", ["connecting", "connecting_lost"], "error"),
        _t("backoff_elapsed", "backoff", "recovering", do="start_recover"),
        _t("recover_ok", "recovering", "connected", do="commit_recover"),
        _t("recover_failed", "recovering", "backoff", when="attempts_left", do="retry_recover"),
        _t("recover_failed", "recovering", "error", unless="attempts_left", do="exhaust_reconnect"),
        _t(
            "close",
            ["connecting", "connecting_lost", "connected", "backoff", "recovering"],
            "disconnecting",
            do="request_disconnect",
        ),
        _t("closed", "disconnecting", "idle"),
        _t("close_failed", "disconnecting", "error"),
        _t("drop", ["connecting", "connecting_lost", "connected"], "idle", do="cleanup_link"),
        _t("fail", ["connecting", "connecting_lost"], "error", do="cleanup_link"),
    ],
)

# --------------------------------------------------------------------------
# Refresh: at most one patch in flight, later requests coalesce.
# --------------------------------------------------------------------------
REFRESH = MachineSpec(
    "refresh",
    states=["idle", "patching", "queued"],
    initial="idle",
    doc=(
        "update_session patches a live, connected session; requests arriving while a "
        "patch is in flight coalesce into one follow-up patch that carries the latest "
        "config (queued). A failed patch keeps the follow-up. A stop, a lost link or a "
        "remote end discards the patch in flight."
    ),
    transitions=[
        _t("update", "idle", "patching", when="can_patch", do="start_patch"),
        _t("update", "idle", None, unless="can_patch", do="cache_update"),
        _t("update", "patching", "queued"),
        _t("update", "queued", None),
        _t("patch_ok", "patching", "idle", do="commit_patch"),
        _t("patch_ok", "queued", "patching", do=["commit_patch", "start_patch"]),
        _t("patch_failed", "patching", "idle", do="fail_patch"),
        _t("patch_failed", "queued", "patching", do=["fail_patch", "start_patch"]),
        _t("abort", ["patching", "queued"], "idle", do="discard_patch_for_stop"),
        _t("lost", ["patching", "queued"], "idle", do="discard_patch_for_reconnect"),
        _t("end", ["patching", "queued"], "idle", do="discard_patch_for_end"),
        _t("abort", "idle", None),
        _t("lost", "idle", None),
        _t("end", "idle", None),
    ],
)

# --------------------------------------------------------------------------
# Response: the assistant's turn.  A delta while responding stays in
# ``responding`` and appends (the most frequent input of all).
# --------------------------------------------------------------------------
_RESPONSE_STATES = ["idle", "responding", "interrupted", "completed"]
RESPONSE = MachineSpec(
    "response",
    states=_RESPONSE_STATES,
    initial="idle",
    doc=(
        "response.started opens a turn; a delta after a finished turn opens a new one, "
        "a delta after an interrupt is dropped; completion after an interrupt keeps the "
        "turn interrupted (usage is still reported); a response the service reports as "
        "cancelled (the user's interrupt or its turn detection) ends interrupted; "
        "interrupt() and a lost link interrupt a turn in progress."
    ),
    transitions=[
        _t("started", _RESPONSE_STATES, "responding", do="open_response"),
        _t("delta", ["idle", "completed"], "responding", do="open_response_with_delta"),
        _t("delta", "responding", None, do="append_delta"),
        _t("delta", "interrupted", None, do="drop_input"),
        _t(
            "completed",
            ["idle", "responding", "completed"],
            "interrupted",
            when="response_cancelled",
            do="cancel_response",
        ),
        _t(
            "completed",
            ["idle", "responding", "completed"],
            "completed",
            unless="response_cancelled",
            do="complete_response",
        ),
        _t("completed", "interrupted", None, do="report_usage"),
        _t("interrupt", "responding", "interrupted"),
        _t("interrupt", ["idle", "interrupted", "completed"], None),
        _t("lost", "responding", "interrupted"),
        _t("lost", ["idle", "interrupted", "completed"], None),
        _t("reset", _RESPONSE_STATES, "idle"),
        _t("sync_idle", _RESPONSE_STATES, "idle"),
        _t("sync_responding", _RESPONSE_STATES, "responding"),
        _t("sync_interrupted", _RESPONSE_STATES, "interrupted"),
        _t("sync_completed", _RESPONSE_STATES, "completed"),
    ],
)

# --------------------------------------------------------------------------
# Audio: the assistant audio item being played, and where playback stands.
# A chunk while playing stays in ``playing`` and counts the audio received
# (frequent, like a text delta).
# --------------------------------------------------------------------------
_AUDIO_STATES = ["silent", "playing", "tail", "muted"]
AUDIO = MachineSpec(
    "audio",
    states=_AUDIO_STATES,
    initial="silent",
    doc=(
        "audio output (a chunk, or a lipsync level above 0.001) starts playback of an "
        "assistant audio item; when the service has sent it all (or an error ends it) "
        "the item stays remembered while the app may still be playing it (tail). "
        "interrupt() and barge-in cut it: when audio received is not yet played, the "
        "item is truncated at the played position (never past the audio received); "
        "audio of the cut item that was already on its way is dropped (muted) until "
        "the next response or another item. A lost link or the end of the session "
        "forgets it. mark_played is accepted only for an item the engine received."
    ),
    transitions=[
        _t("start", ["silent", "tail"], "playing", do="emit_audio_start"),
        _t("start", ["playing", "muted"], None),
        _t("chunk", _AUDIO_STATES, None, when="late_chunk", do="drop_input"),
        _t(
            "chunk",
            ["silent", "tail", "muted"],
            "playing",
            unless="late_chunk",
            do=["emit_audio_start", "note_chunk"],
        ),
        _t("chunk", "playing", None, unless="late_chunk", do="note_chunk"),
        _t("level", "playing", None, do="emit_level"),
        _t(
            "level",
            ["silent", "tail"],
            "playing",
            when="audible",
            do=["emit_audio_start", "emit_level"],
        ),
        _t("level", ["silent", "tail"], None, unless="audible", do="emit_level"),
        _t("level", "muted", None, do="drop_input"),
        _t("end", "playing", "tail", when="has_item", do="emit_audio_end"),
        _t("end", "playing", "silent", unless="has_item", do="emit_audio_end"),
        _t("end", ["silent", "tail", "muted"], None),
        _t(
            "cut",
            "playing",
            "muted",
            when="unplayed_audio",
            do=["truncate_item", "emit_audio_end"],
        ),
        _t(
            "cut",
            "playing",
            "muted",
            unless="unplayed_audio",
            do=["emit_audio_end", "forget_item"],
        ),
        _t("cut", "tail", "muted", when="unplayed_audio", do="truncate_item"),
        _t("cut", "tail", "muted", unless="unplayed_audio", do="forget_item"),
        _t("cut", ["silent", "muted"], None),
        _t("unmute", "muted", "silent"),
        _t("unmute", ["silent", "playing", "tail"], None),
        _t(
            "mark",
            ["playing", "tail", "silent", "muted"],
            None,
            when="known_item",
            do="record_played",
        ),
        _t("reset", "playing", "silent", do=["emit_audio_end", "forget_item"]),
        _t("reset", ["tail", "muted"], "silent", do="forget_item"),
        _t("reset", "silent", None, do="forget_item"),
    ],
)

MACHINES: dict[str, MachineSpec] = {
    spec.name: spec for spec in (SESSION, CONNECTION, REFRESH, RESPONSE, AUDIO)
}
