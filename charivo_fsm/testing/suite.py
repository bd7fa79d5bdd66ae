"""The semantic suite: driver programs over a real manager and their invariants.

This is tier 3 of the test plan (DESIGN §3): one *program* per Hypothesis
example, run by one ``anyio.run`` on a virtual clock, drawing its next step
inside the loop -- user commands, transport events, transport faults and
advancing time -- against a :class:`~charivo_fsm.RealtimeManager` wired to any
transport.  After every step (and at the end, after leaving ``async with``)
the named invariants of :data:`INVARIANTS` are checked; docs/invariants.md
says which decision (D-rule) each one comes from.

Rules of the suite:

* Everything the suite knows about the engine it learns from the outside:
  the emitted events, the log records, the calls the manager makes on the
  transport (through a recording proxy), the events the transport delivers,
  the callers' outcomes and ``manager.state``.  Nothing here reads the core,
  so the suite checks any build of the engine and any transport.
* Each invariant is a generator function that is sent every observation
  (:data:`Observation`) in order and raises :class:`Broken` when its rule is
  violated.  Observations made inside the manager (an emit, a transport call)
  never raise there: the first violation is recorded and the program stops
  at the end of the step.
* Transports are driven through :class:`TransportFaults`, a small
  fault-injection interface; :class:`FakeTransportFaults` implements it over
  :class:`~charivo_fsm.testing.FakeTransport`.  A transport author implements
  it for their own transport and passes a :data:`TransportFactory`
  (``charivo-fsm check --transport MODULE:FACTORY``).

Hypothesis, trio and looptime are imported only when a program runs, so
importing :mod:`charivo_fsm.testing` does not need the test dependencies.

The suite is split into modules (all names stay importable from here):

* :mod:`.suite_base` -- settings, observations, the invariant registry, the context;
* :mod:`.suite_faults` -- :class:`TransportFaults` and the fake's implementation;
* :mod:`.suite_lifecycle`, :mod:`.suite_rules`, :mod:`.suite_obligations`,
  :mod:`.suite_voice` -- the invariants, by family;
* :mod:`.suite_driver` -- the instruments, the steps and the driver of one program;
* this module -- the Hypothesis strategies and the runners.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from ..events import (
    AssistantResponseCompleted,
    AssistantResponseStarted,
    AssistantTextDelta,
    AudioLipsync,
    AudioOutputDelta,
    AudioOutputEnded,
    AudioOutputStarted,
    ConnectionLost,
    ErrorEvent,
    SessionEnded,
    SessionStarted,
    StateUpdate,
    ToolCall,
    ToolResult,
    UserSpeechStarted,
    UserTranscript,
)
from ..model import ResponseStatus
from . import (  # noqa: F401  (they register their invariants, in this order)
    suite_lifecycle,
    suite_obligations,
    suite_rules,
    suite_voice,
)
from .fake import MethodName
from .suite_base import (
    BACKENDS,
    CALL_IDS,
    INVARIANTS,
    VOICES,
    Backend,
    Broken,
    CallEntered,
    CallExited,
    Checkpoint,
    Command,
    CommandIssued,
    CommandReturned,
    Context,
    Crashed,
    Delivered,
    Delivering,
    Emitted,
    Exited,
    Invariant,
    InvariantViolation,
    Leaving,
    Logged,
    Observation,
    SuiteConfig,
    ToolRan,
    TransportCall,
)
from .suite_driver import (
    TOOL_NAMES,
    Advance,
    Chain,
    ChangeTools,
    Deliver,
    Driver,
    DuringNext,
    FailingListeners,
    Fault,
    Latency,
    MarkPlayed,
    ProgramResult,
    RecordingTransport,
    Send,
    SendKind,
    StartSession,
    Step,
    StopSession,
    Together,
    UpdateSession,
    _run_backend,
    _tapped_module_logger,
)
from .suite_faults import (
    FakeTransportFaults,
    TransportFactory,
    TransportFaults,
    TransportRules,
    fake_transport_factory,
)

if TYPE_CHECKING:
    from hypothesis.strategies import DataObject, SearchStrategy


def _rule_order(invariant: Invariant) -> tuple[float, ...]:
    """Decisions in order (D3 < D17.13), then the voice rules, then the transport's."""
    first = invariant.rule.split(", ")[0]
    if first.startswith("D"):
        return tuple(float(part) for part in first[1:].split("."))
    return (100.0,) if first == "voice" else (101.0,)


INVARIANTS.sort(key=_rule_order)  # registered module by module; listed by decision

__all__ = [
    "BACKENDS",
    "INVARIANTS",
    "Advance",
    "Backend",
    "Broken",
    "CallEntered",
    "CallExited",
    "ChangeTools",
    "Checkpoint",
    "Command",
    "CommandIssued",
    "CommandReturned",
    "Context",
    "Crashed",
    "Deliver",
    "Delivered",
    "Delivering",
    "Driver",
    "Emitted",
    "Exited",
    "FailingListeners",
    "FakeTransportFaults",
    "Fault",
    "Invariant",
    "InvariantViolation",
    "Latency",
    "Leaving",
    "Logged",
    "Observation",
    "ProgramResult",
    "RecordingTransport",
    "Send",
    "StartSession",
    "Step",
    "StopSession",
    "SuiteConfig",
    "SuiteResult",
    "Together",
    "ToolRan",
    "TransportCall",
    "TransportFactory",
    "TransportFaults",
    "TransportRules",
    "UpdateSession",
    "describe_invariants",
    "fake_transport_factory",
    "format_steps",
    "jitter_strategy",
    "latency_strategy",
    "run_program",
    "run_steps",
    "run_suite",
    "step_strategy",
]

# ===========================================================================
# Hypothesis glue
# ===========================================================================


def step_strategy() -> SearchStrategy[Step]:
    """The Hypothesis strategy for one step (weighted towards interesting ones)."""
    global _STEP_STRATEGY
    if _STEP_STRATEGY is None:
        _STEP_STRATEGY = _build_step_strategy()
    strategy: SearchStrategy[Step] = _STEP_STRATEGY
    return strategy


_STEP_STRATEGY: Any = None


def latency_strategy() -> SearchStrategy[Latency]:
    """The strategy for the latency of each lifecycle call (mostly none)."""
    from hypothesis import strategies as st

    delay = st.sampled_from((0.0, 0.0, 0.0, 0.5, 2.0))
    return st.builds(
        Latency,
        st.tuples(*(st.tuples(st.just(method), delay) for method in _LIFECYCLE_ORDER)),
    )


def jitter_strategy() -> SearchStrategy[tuple[float, ...]]:
    """The values the reconnect jitter's random source returns in turn.

    0.5 leaves a delay as configured (what shrinking goes to); 0 and 0.999 are
    the two ends of the jitter's range.
    """
    from hypothesis import strategies as st

    value = st.sampled_from((0.5, 0.0, 0.999, 0.25, 0.75))
    return st.lists(value, min_size=1, max_size=4).map(tuple)


_REFUSED_SENDS: tuple[tuple[MethodName, SendKind], ...] = (
    ("send_text", "send_message"),
    ("interrupt", "interrupt"),
    ("send_audio", "send_audio_chunk"),
)

_LIFECYCLE_ORDER: tuple[MethodName, ...] = ("connect", "update_session", "recover", "disconnect")


def _build_step_strategy() -> SearchStrategy[Step]:
    from hypothesis import strategies as st

    def _weighted(choices: Sequence[SearchStrategy[Step]]) -> SearchStrategy[Step]:
        # One of ``choices``, each as likely as it is repeated there.
        choose = st.sampled_from(tuple(choices))

        @st.composite
        def pick(draw: Callable[[SearchStrategy[Any]], Any]) -> Step:
            chosen: SearchStrategy[Step] = draw(choose)
            drawn: Step = draw(chosen)
            return drawn

        return pick()

    voices = st.sampled_from(VOICES)
    lost = st.one_of(
        st.just(ConnectionLost(cause="network")),
        st.builds(
            ConnectionLost,
            cause=st.just("network"),
            error=st.builds(OSError, st.just("connection reset")),
        ),
    )
    tool_call = st.builds(
        ToolCall,
        name=st.sampled_from(("quick", "quick", "lagging", *TOOL_NAMES[2:], "ghost")),
        args=st.sampled_from(({"n": 1}, {"n": 1}, {"n": 1}, {"n": "x"}, {})),
        call_id=st.sampled_from(("c1", *CALL_IDS)),
    )
    with_usage = st.builds(
        AssistantResponseCompleted,
        text=st.sampled_from(("Hello", "")),
        usage=st.just({"total_tokens": 7}),
        model=st.just("m"),
        response_id=st.just("r1"),
        status=st.sampled_from(("completed", "cancelled")),
    )
    response = st.one_of(
        st.just(AssistantResponseStarted()),
        st.builds(AssistantTextDelta, text=st.sampled_from(("Hel", "lo"))),
        st.just(AssistantResponseCompleted()),
        with_usage,
    )
    # Assistant audio: 100 ms, 20 ms or one byte of PCM16, for two items or none.
    chunk = st.builds(
        AudioOutputDelta,
        audio=st.sampled_from((b"\x01" * 4800, b"\x02" * 960, b"\x03")),
        item_id=st.sampled_from(("i1", "i2", None)),
    )
    speech = st.just(UserSpeechStarted(item_id="u1", audio_start_ms=0))
    audio = st.one_of(
        chunk,
        st.just(AudioOutputStarted()),
        st.just(AudioOutputEnded()),
        st.builds(AudioLipsync, rms=st.sampled_from((0.0, 0.4))),
        speech,
    )
    error_event = st.builds(ErrorEvent, error=st.builds(RuntimeError, st.just("provider error")))
    state_update = st.builds(
        StateUpdate,
        response_status=st.sampled_from((None, *ResponseStatus)),
        response_text=st.sampled_from((None, "synced")),
    )
    misc = st.one_of(
        st.just(UserTranscript(text="hi")),
        st.just(ToolResult(name="remote", output={"success": True}, call_id="remote-1")),
    )
    fault_event = st.one_of(
        lost,
        st.just(SessionEnded()),
        st.just(SessionStarted()),
        error_event,
    )
    methods: SearchStrategy[MethodName] = st.sampled_from(
        (
            *("connect", "update_session", "recover", "disconnect") * 2,
            "recover",
            *("send_tool_result",) * 4,
            "send_text",
            "interrupt",
        )
    )
    fail_once = st.builds(Fault, method=methods, action=st.just("fail_once"))
    delay = st.builds(
        Fault,
        method=methods,
        action=st.just("delay"),
        seconds=st.sampled_from((0.5, 1.0, 2.0, 4.0)),
    )
    slow = st.builds(
        Fault, method=methods, action=st.just("slow"), seconds=st.sampled_from((0.5, 1.0, 2.0))
    )
    fail_always = st.builds(Fault, method=methods, action=st.just("fail_always"))
    fault: SearchStrategy[Step] = _weighted(
        (
            fail_once,
            fail_once,
            fail_once,
            delay,
            delay,
            slow,
            st.builds(Fault, method=methods, action=st.just("hang")),
            fail_always,
            fail_always,
            fail_always,
            st.builds(Fault, method=methods, action=st.just("succeed")),
            st.builds(Fault, method=methods, action=st.just("emit_then_raise"), event=fault_event),
        )
    )
    # Stories: a few steps told as one, that put the engine where the rules are
    # (reach).  Random steps alone seldom line these up: a recover in flight when
    # session.started (or .ended, a loss, an error, a tool call) arrives; a
    # reconnect that keeps failing; a conversation, then a lost link; a response
    # interrupted, then completed with usage; audio playing when an error arrives;
    # audio cut at its played position by interrupt() or barge-in; a tool running
    # past its timeout; a send the transport refuses; a loss, an end, an error or
    # a stop during a patch; a start against a link that never answers.  Half of
    # them begin with a start_session, so that a session is likely to run.
    lost_now = ConnectionLost(cause="network")
    error_now = ErrorEvent(RuntimeError("provider error"))
    lost_link_event = st.one_of(
        st.just(SessionStarted()),
        st.just(SessionEnded()),
        lost,
        error_event,
        tool_call,
    )
    during: SearchStrategy[Step] = st.builds(
        DuringNext,
        method=st.sampled_from(("recover",) * 4 + ("update_session", "connect", "disconnect")),
        event=st.one_of(lost_link_event, with_usage, chunk),
    )

    def told(*parts: Any) -> Chain:
        steps: list[Step] = []
        for part in parts:
            steps.extend(part if isinstance(part, tuple) else (part,))
        return Chain(tuple(steps))

    recover_story = st.builds(
        lambda event, wait: told(DuringNext("recover", event), Deliver(lost_now), Advance(wait)),
        st.one_of(st.sampled_from((SessionStarted(), SessionEnded())), lost_link_event),
        st.sampled_from((1.0, 0.5, 5.0)),
    )
    conversation_story = st.builds(
        lambda wait: told(Send("send_message"), Advance(0.5), Deliver(lost_now), Advance(wait)),
        st.sampled_from((1.0, 5.0)),
    )
    failing_recover_story = st.builds(
        lambda action, wait: told(
            Fault("recover", action), Deliver(lost_now), Advance(wait), Fault("recover", "succeed")
        ),
        st.sampled_from(("fail_always", "hang")),
        st.sampled_from((5.0, 2.0, 30.0)),
    )
    interrupted_story = st.builds(
        lambda cut, done: told(
            Deliver(AssistantResponseStarted()), Deliver(AssistantTextDelta("Hel")), cut, done
        ),
        st.sampled_from(
            (
                Send("interrupt"),
                Deliver(lost_now),
                Deliver(AssistantResponseCompleted(status="cancelled", reason="turn_detected")),
            )
        ),
        st.builds(Deliver, with_usage),
    )
    error_story = st.builds(
        lambda audio_event, wait: told(Deliver(audio_event), Advance(wait), Deliver(error_now)),
        st.one_of(chunk, st.just(AudioOutputStarted())),
        st.sampled_from((0.05, 0.0, 0.5)),
    )
    played = st.builds(
        MarkPlayed, st.sampled_from(("i1", "i2", "zz")), st.sampled_from((30, 0, 150))
    )
    voice_story = st.builds(
        lambda size, wait, report, cut: told(
            Deliver(AudioOutputDelta(b"\x01" * size, "i1")),
            Advance(wait),
            tuple(MarkPlayed("i1", ms) for ms in report),
            cut,
        ),
        st.sampled_from((4800, 960)),
        st.sampled_from((0.05, 0.0, 0.2)),
        st.sampled_from(((), (30,), (0,), (150,))),
        st.sampled_from((Send("interrupt"), Deliver(UserSpeechStarted("u1", 0)))),
    )
    tool_story = st.builds(
        lambda name, wait: told(
            Deliver(ToolCall(name=name, args={"n": 1}, call_id="c3")), Advance(wait)
        ),
        st.sampled_from(("slow", "overtime", "lagging")),
        st.sampled_from((1.5, 0.5, 3.0)),
    )
    refused_result = told(
        Fault("send_tool_result", "fail_once"),
        Deliver(ToolCall(name="quick", args={"n": 1}, call_id="c2")),
    )
    refused_send_story = st.sampled_from(
        (
            refused_result,
            refused_result,
            *(
                told(Fault(method, "fail_once"), Send(command))
                for method, command in _REFUSED_SENDS
            ),
        )
    )
    patch_story = st.builds(
        lambda seconds, voice, event: told(
            Fault("update_session", "delay", seconds), UpdateSession(voice), event, Advance(2.0)
        ),
        st.sampled_from((1.0, 0.5)),
        voices,
        st.sampled_from(
            (
                Deliver(lost_now),
                Deliver(SessionEnded()),
                Deliver(error_now),
                StopSession(),
                UpdateSession(VOICES[1]),
            )
        ),
    )
    hanging_start_story = st.builds(
        lambda wait: told(Fault("connect", "hang"), StartSession(VOICES[0]), Advance(wait)),
        st.sampled_from((5.0, 10.0, 30.0)),
    )
    story_told: SearchStrategy[Step] = _weighted(
        (
            recover_story,
            recover_story,
            recover_story,
            failing_recover_story,
            failing_recover_story,
            conversation_story,
            patch_story,
            patch_story,
            interrupted_story,
            interrupted_story,
            error_story,
            voice_story,
            voice_story,
            tool_story,
            tool_story,
            refused_send_story,
            hanging_start_story,
        )
    )
    story = st.builds(
        lambda begin, told_story: (
            Chain((StartSession(VOICES[0]), *told_story.steps)) if begin else told_story
        ),
        st.booleans(),
        story_told,
    )
    start = st.builds(StartSession, voice=voices)
    update = st.builds(UpdateSession, voice=voices)
    stop = st.just(StopSession())
    concurrent: SearchStrategy[Step] = _weighted(
        (
            start,
            start,
            update,
            update,
            update,
            stop,
            stop,
            st.builds(Deliver, lost),
            st.builds(Deliver, tool_call),
            st.just(Deliver(SessionEnded())),
            st.builds(Deliver, error_event),
        )
    )
    # Weights (out of ~120): what the rules are about -- commands racing each
    # other (Together), faults, lost links, tool calls and time -- comes often;
    # the response and audio traffic that no lifecycle rule depends on, rarely.
    # Shrinking moves towards the first entry of each list: the simplest step is
    # "advance 5s" (longer than every delay and timeout but the watchdog's).
    weighted: list[tuple[int, SearchStrategy[Step]]] = [
        (12, st.builds(Advance, seconds=st.sampled_from((5.0, 0.25, 0.5, 1.0, 2.0, 10.0, 30.0)))),
        (9, start),
        (9, update),
        (6, stop),
        (14, st.builds(Together, st.lists(concurrent, min_size=2, max_size=4).map(tuple))),
        (4, st.builds(Together, st.lists(update, min_size=2, max_size=4).map(tuple))),
        (14, fault),
        (7, st.builds(Deliver, lost)),
        (12, st.builds(Deliver, tool_call)),
        (3, st.just(Deliver(SessionEnded()))),
        (2, st.just(Deliver(SessionStarted()))),
        (5, st.builds(Deliver, response)),
        (2, st.builds(Deliver, audio)),
        (4, st.builds(Deliver, error_event)),
        (2, st.builds(Deliver, state_update)),
        (2, st.builds(Deliver, misc)),
        (3, st.builds(Send, st.sampled_from(("send_message", "send_audio_chunk", "interrupt")))),
        (1, st.builds(Send, st.sampled_from(("commit_audio", "clear_audio")))),
        (4, during),
        (10, story),
        (3, st.builds(Deliver, chunk)),
        (1, st.builds(Deliver, speech)),
        (1, played),
        (2, st.builds(ChangeTools, register=st.booleans(), name=st.sampled_from(TOOL_NAMES))),
        (2, st.builds(FailingListeners, st.booleans())),
    ]
    table: list[SearchStrategy[Step]] = []
    for weight, strategy in weighted:
        table.extend([strategy] * weight)
    return _weighted(table)


class _Stats:
    """How many programs ran, and which one first violated an invariant."""

    def __init__(self) -> None:
        self.examples = 0
        self.first_failure: int | None = None
        self.last_failure: ProgramResult | None = None


def run_program(
    data: DataObject,
    *,
    backend: Backend = "trio",
    factory: TransportFactory | None = None,
    config: SuiteConfig | None = None,
    invariants: Sequence[Invariant] | None = None,
    stats: _Stats | None = None,
) -> ProgramResult:
    """Run one program drawn from ``data`` (inside ``@given(st.data())``).

    Raises :class:`InvariantViolation` (with the program's steps as a note) when
    an invariant fails.
    """
    config = config or SuiteConfig()
    steps = step_strategy()
    from hypothesis import strategies as st

    length = data.draw(st.integers(1, config.max_steps), label="steps")
    jitter = data.draw(jitter_strategy(), label="jitter")
    problem: list[BaseException] = []
    opening: list[Step] = []

    def draw(index: int) -> Step | None:
        if index > length or problem:
            return None
        try:
            if index == 1:
                # The link's latency comes first: slow lifecycle calls open the
                # windows (starting, patching, recovering, stopping) races need.
                latency = data.draw(latency_strategy(), label="latency")
                if any(delay for _method, delay in latency.seconds):
                    opening.append(latency)
                # Most programs then start a session: most rules are about one.
                if data.draw(st.sampled_from((True, True, True, False)), label="opening"):
                    opening.append(StartSession(VOICES[0]))
            if opening:
                return opening.pop(0)
            step: Step = data.draw(steps, label=f"step {index}")
        except BaseException as error:  # Hypothesis' own control flow: re-raised below
            problem.append(error)
            return None
        return step

    driver = Driver(
        draw,
        factory or fake_transport_factory,
        config,
        INVARIANTS if invariants is None else invariants,
        jitter,
    )
    if stats is not None:
        stats.examples += 1
    with _tapped_module_logger(driver.ctx):
        _run_backend(backend, driver.main)
    if problem:
        raise problem[0]
    result = ProgramResult(driver.steps, driver.ctx.violation)
    violation = driver.ctx.violation
    if violation is not None:
        violation.steps = list(driver.steps)
        if stats is not None:
            if stats.first_failure is None:
                stats.first_failure = stats.examples
            stats.last_failure = result
        violation.add_note(format_steps(driver.steps))
        raise violation
    return result


def run_steps(
    steps: Sequence[Step],
    *,
    backend: Backend = "trio",
    factory: TransportFactory | None = None,
    config: SuiteConfig | None = None,
    invariants: Sequence[Invariant] | None = None,
    jitter: Sequence[float] = (0.5,),
) -> ProgramResult:
    """Run one fixed program (a regression test, a counterexample replayed).

    ``jitter`` are the values the reconnect jitter's random source returns in
    turn (0.5: each delay as configured; 0 and 1: the bounds).  Raises
    :class:`InvariantViolation` like :func:`run_program`.
    """
    config = config or SuiteConfig()
    queue = list(steps)

    def draw(index: int) -> Step | None:
        return queue[index - 1] if index <= len(queue) else None

    driver = Driver(
        draw,
        factory or fake_transport_factory,
        attrs.evolve(config, max_steps=max(len(queue), 1)),
        INVARIANTS if invariants is None else invariants,
        jitter,
    )
    with _tapped_module_logger(driver.ctx):
        _run_backend(backend, driver.main)
    violation = driver.ctx.violation
    if violation is not None:
        violation.steps = list(driver.steps)
        violation.add_note(format_steps(driver.steps))
        raise violation
    return ProgramResult(driver.steps, None)


def format_steps(steps: Sequence[str]) -> str:
    """A counterexample as a numbered step list."""
    lines = ["program:"]
    lines += [f"  {number:>2}. {text}" for number, text in enumerate(steps, 1)]
    return "\n".join(lines)


@attrs.define(slots=True)
class SuiteResult:
    """The outcome of :func:`run_suite` on one backend."""

    backend: Backend
    examples: int
    seconds: float
    violation: InvariantViolation | None = None
    first_failure: int | None = None  # the example that first failed (1-based)
    error: BaseException | None = None  # a failure that is not an invariant (flaky, ...)

    @property
    def ok(self) -> bool:
        """Whether the run broke no invariant and met no other failure."""
        return self.violation is None and self.error is None


def run_suite(
    *,
    backend: Backend = "trio",
    examples: int = 100,
    seed: int | None = None,
    factory: TransportFactory | None = None,
    config: SuiteConfig | None = None,
    shrink: bool = True,
    invariants: Sequence[Invariant] | None = None,
) -> SuiteResult:
    """Run ``examples`` programs on ``backend`` and report the first violation.

    With ``shrink`` the violation's steps are Hypothesis' shrunk counterexample;
    without, the first failing program as generated (faster, used to count how
    many examples a planted bug needs).
    """
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as seed_with
    from hypothesis import strategies as st

    stats = _Stats()
    phases = [Phase.generate, Phase.shrink] if shrink else [Phase.generate]

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=phases,
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(data=st.data())
    def program(data: DataObject) -> None:
        run_program(
            data,
            backend=backend,
            factory=factory,
            config=config,
            invariants=invariants,
            stats=stats,
        )

    test = seed_with(seed)(program) if seed is not None else program
    started = time.perf_counter()
    violation: InvariantViolation | None = None
    error: BaseException | None = None
    try:
        test()
    except InvariantViolation as raised:
        violation = raised
    except Exception as raised:
        error = raised
        if stats.last_failure is not None:
            violation = stats.last_failure.violation
    examples_run = stats.examples if stats.first_failure is None else stats.first_failure
    return SuiteResult(
        backend,
        examples_run,
        time.perf_counter() - started,
        violation,
        stats.first_failure,
        error,
    )


def describe_invariants() -> list[str]:
    """One line per invariant: ``[rule] name: summary``."""
    return [f"[{inv.rule}] {inv.name}: {inv.summary}" for inv in INVARIANTS]


assert len({inv.name for inv in INVARIANTS}) == len(INVARIANTS)
