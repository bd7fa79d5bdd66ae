"""Running the demo: the step table, the set-up around the steps, and the command."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final, TextIO

import anyio

from .. import CharivoError, build_realtime_session_config
from ..avatar import (
    build_avatar_control_instructions,
    create_avatar_control_tools,
    create_avatar_result_projector,
)
from ..manager import create_realtime_manager
from ..model import RealtimeToolContext, RealtimeToolRegistration
from ..testing.server import LocalRealtimeServer
from ..transports.openai import DEFAULT_URL, OpenAIRealtimeTransport
from .narration import LogCollector, Narrator, Outcome, StepFailed, Timeline, captured_logging
from .script import (
    CATALOG,
    CHARACTER,
    DEMO_API_KEY,
    LOCAL_TRIGGERS,
    WEATHER_TOOL,
    Demo,
    ServerJournal,
    local_reply,
)
from .steps import (
    step_interrupt,
    step_message,
    step_start,
    step_stop,
    step_tools,
    step_updates,
)
from .voice_steps import (
    RECONNECT_DELAYS,
    step_barge_in,
    step_push_to_talk,
    step_reconnect,
    step_voice_wav,
)

__all__ = ["STEPS", "Inject", "demo_session", "run_demo"]

Step = Callable[[Demo], Awaitable[None]]

_SCRIPT: Final[tuple[tuple[str, Step], ...]] = (
    ("start a voice session with a character and tools", step_start),
    ("a message answered with streamed text and audio", step_message),
    ("the model's voice, written to a WAV file", step_voice_wav),
    ("a tool turn, answered after its response ended", step_tools),
    ("barge-in: the user speaks over the model", step_barge_in),
    ("push to talk: clear_audio(), commit_audio()", step_push_to_talk),
    ("server-side drop, reconnect, the model remembers", step_reconnect),
    ("concurrent session updates, coalesced", step_updates),
    ("interrupt a streaming response", step_interrupt),
    ("stop the session", step_stop),
)

STEPS: Final[tuple[str, ...]] = tuple(title for title, _ in _SCRIPT)
"""The titles of the demo's steps, in order (step ``n`` is ``STEPS[n - 1]``)."""

Inject = Callable[[int, LocalRealtimeServer], object]
"""A hook ``(step, server)`` called before each step in local mode (fault injection)."""


async def _run_script(demo: Demo, outcome: Outcome, inject: Inject | None) -> None:
    async with anyio.create_task_group() as group:
        group.start_soon(demo.timeline.run_ticker)
        try:
            for number, (title, step) in enumerate(_SCRIPT, 1):
                outcome.step = number
                demo.logs.patches = 0
                demo.timeline.raw(f"---- step {number}/{len(STEPS)}: {title}")
                if inject is not None and demo.server is not None:
                    inject(number, demo.server)
                await step(demo)
                await demo.settle()
        except StepFailed as failed:
            outcome.fail(failed.message)
        except CharivoError as error:
            outcome.fail(f"{type(error).__name__}: {error.message}")
        except Exception as error:  # report, never a traceback
            outcome.fail(f"{type(error).__name__}: {error}")
        finally:
            group.cancel_scope.cancel()


async def _run(
    *,
    live: bool,
    server: LocalRealtimeServer | None,
    timeline: Timeline,
    logs: LogCollector,
    engine_logger: logging.Logger,
    outcome: Outcome,
    inject: Inject | None,
    live_url: str | None,
    live_settle: float,
    out_dir: Path | None,
) -> None:
    timeout = 30.0 if live else 5.0
    if server is not None:
        transport = OpenAIRealtimeTransport(api_key=DEMO_API_KEY, url=server.url)
        timeline.line("server", f"local realtime server at {server.url}")
    else:
        transport = OpenAIRealtimeTransport(url=live_url or DEFAULT_URL)  # OPENAI_API_KEY
        timeline.line("server", f"OpenAI Realtime API at {transport.url} ({transport.model})")

    weather_calls: list[str] = []

    async def get_weather(args: dict[str, Any], context: RealtimeToolContext) -> Mapping[str, Any]:
        city = str(args["city"])
        weather_calls.append(city)
        return {"success": True, "city": city, "forecast": "sunny, light breeze", "high_c": 21}

    tools = [
        RealtimeToolRegistration(definition=WEATHER_TOOL, handler=get_weather),
        *create_avatar_control_tools(CATALOG),
    ]
    instructions = (
        str(build_realtime_session_config(CHARACTER).instructions)
        + "\n\n"
        + build_avatar_control_instructions(CATALOG)
    )
    narrator = Narrator(timeline, timeout)
    async with transport:
        manager = create_realtime_manager(
            transport,
            tools=tools,
            result_projectors=[create_avatar_result_projector()],
            reconnect_delays=RECONNECT_DELAYS,
            reconnect_jitter=0,  # exact delays, so the timeline can show them
            transport_timeout=15.0 if live else 5.0,
            logger=engine_logger,
        )
        async with manager:
            narrator.bind(manager)
            manager.set_event_emitter(narrator)
            manager.set_character(CHARACTER)
            demo = Demo(
                live=live,
                server=server,
                journal=ServerJournal(server) if server is not None else None,
                timeline=timeline,
                narrator=narrator,
                logs=logs,
                transport=transport,
                manager=manager,
                instructions=instructions,
                timeout=timeout,
                quiet=live_settle if live else 0.0,
                out_dir=out_dir,
                weather_calls=weather_calls,
            )
            await _run_script(demo, outcome, inject)
        if outcome.failure is None:
            state = manager.state
            if str(state.session.status) != "stopped":
                outcome.fail(f"session status {state.session.status} after the manager closed")
    failures = [e for e in logs.events if e in ("listener.failed", "projector.failed")]
    if outcome.failure is None and failures:
        outcome.fail(f"the engine logged {failures[0]} (the narration or projector raised)")


async def demo_session(
    *,
    live: bool = False,
    out: TextIO | None = None,
    inject: Inject | None = None,
    live_url: str | None = None,
    live_settle: float = 1.0,
    out_dir: str | os.PathLike[str] | None = None,
) -> int:
    """Run the scripted session and narrate it on ``out`` (default: stdout).

    Returns 0 when every step behaved as expected, 1 otherwise (the failing
    step is named on the last lines).  ``inject(step, server)`` is called
    before each step in local mode; tests use it to inject faults.  The
    model's voice is written to ``out_dir`` (created if needed; default: a new
    temporary directory), whose path the timeline shows.

    Live mode (``live=True``) reads ``OPENAI_API_KEY`` and talks to
    ``live_url`` (default: the OpenAI Realtime endpoint); between steps it
    waits until the model has been quiet for ``live_settle`` seconds, since a
    real model may call the avatar tools on its own and answer again.
    """
    timeline = Timeline(out if out is not None else sys.stdout)
    outcome = Outcome()
    logs = LogCollector(timeline)
    bound = 180.0 if live else 20.0
    tasks_before = len(anyio.get_running_tasks())
    mode = "live, OpenAI Realtime API" if live else "local server, real WebSocket transport"
    timeline.raw(f"charivo-fsm demo ({mode}): {len(STEPS)} steps")
    server: LocalRealtimeServer | None = None
    last = len(STEPS)
    with captured_logging(logs) as engine_logger:
        try:
            with anyio.fail_after(bound):
                run = functools.partial(
                    _run,
                    live=live,
                    timeline=timeline,
                    logs=logs,
                    engine_logger=engine_logger,
                    outcome=outcome,
                    inject=inject,
                    live_url=live_url,
                    live_settle=live_settle,
                    out_dir=Path(out_dir) if out_dir is not None else None,
                )
                if live:
                    await run(server=None)
                else:
                    server = LocalRealtimeServer(
                        api_key=DEMO_API_KEY, tool_triggers=LOCAL_TRIGGERS, reply=local_reply
                    )
                    async with server:
                        await run(server=server)
                        if outcome.failure is None:
                            with anyio.move_on_after(2.0):
                                while server.active_connections:
                                    await anyio.sleep(0.01)
                            if server.active_connections:
                                outcome.fail("the server still has a live connection", last)
        except TimeoutError:
            outcome.fail(f"the whole run took longer than {bound:g}s")
        except CharivoError as error:
            outcome.fail(f"{type(error).__name__}: {error.message}")
        except Exception as error:
            outcome.fail(f"{type(error).__name__}: {error}")
        if outcome.failure is None:
            # Tasks of a server outside the demo (live mode in the tests) may
            # need a moment to notice the close; a leaked task stays.
            left = len(anyio.get_running_tasks()) - tasks_before
            with anyio.move_on_after(1.0):
                while left > 0:
                    await anyio.sleep(0.01)
                    left = len(anyio.get_running_tasks()) - tasks_before
            if left:
                outcome.fail(f"{left} task(s) left running", last)
        timeline.finish()
        if outcome.failure is not None:
            step = outcome.failed_step
            title = STEPS[step - 1] if 1 <= step <= len(STEPS) else "set-up"
            timeline.wrapped("FAIL", f"step {step}/{len(STEPS)} ({title}): {outcome.failure}")
            problems = logs.problems()
            if problems:
                timeline.line("log", f"the last {len(problems)} warnings/errors the engine logged:")
            for problem in problems:
                timeline.line("log", problem)
            timeline.raw(f"demo FAILED at step {step}/{len(STEPS)}")
            return 1
        extra = "" if server is None else f", {server.connections} server connections"
        timeline.line("check", f"ok: no live connection, no task left{extra}")
        timeline.raw(f"demo passed: all {len(STEPS)} steps in {timeline.elapsed():.2f}s")
        return 0


def run_demo(
    live: bool = False,
    *,
    backend: str = "asyncio",
    out_dir: str | os.PathLike[str] | None = None,
) -> int:
    """The ``charivo-fsm demo`` command: run :func:`demo_session`, return the exit code.

    ``live=True`` needs ``OPENAI_API_KEY``; without it a message is printed and
    the exit code is 2.  ``out_dir`` is where the WAV file goes (``--out DIR``).
    """
    if live and not os.environ.get("OPENAI_API_KEY", "").strip():
        print(
            "charivo-fsm demo --live: OPENAI_API_KEY is not set. Export your OpenAI API key"
            " to run the demo against the real Realtime API, or run 'charivo-fsm demo'"
            " (no --live) for the local server.",
            file=sys.stderr,
        )
        return 2
    try:
        result: int = anyio.run(
            functools.partial(demo_session, live=live, out_dir=out_dir), backend=backend
        )
    except KeyboardInterrupt:
        print("\ncharivo-fsm demo: interrupted", file=sys.stderr)
        return 130
    return result
