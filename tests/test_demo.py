"""The scripted demo (``charivo-fsm demo``): it passes, it notices misbehaviour.

The demo does real loopback I/O against the embedded server, so this module
overrides the suite's ``anyio_backend`` fixture with *real* clocks (as
``tests/test_openai_transport.py`` does): a virtual clock would jump ahead
whenever every task waits for the network.
"""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from charivo_fsm.demo import (
    DEMO_API_KEY,
    LOCAL_TRIGGERS,
    STEPS,
    Inject,
    _local_reply,
    demo_session,
    run_demo,
)
from charivo_fsm.testing import LocalRealtimeServer

ROOT = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"^\[ *(\d+\.\d{3})s\] ")


@pytest.fixture(params=["asyncio", "trio"], ids=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Real clocks for real socket I/O (overrides tests/conftest.py)."""
    return (request.param, {})


def _check_layout(text: str) -> None:
    """Every line is short; every line but wrapped continuations has a rising timestamp."""
    last = 0.0
    for line in text.splitlines():
        assert len(line) < 100, line
        match = STAMP.match(line)
        if match is None:
            assert line.startswith(" " * 10), line  # a continuation of a wrapped event
            continue
        stamp = float(match.group(1))
        assert stamp >= last, line
        last = stamp


async def _run(inject: Inject | None = None, **kwargs: Any) -> tuple[int, str, float]:
    out = io.StringIO()
    started = time.perf_counter()
    code = await demo_session(out=out, inject=inject, **kwargs)
    return code, out.getvalue(), time.perf_counter() - started


@pytest.mark.anyio
async def test_demo_passes_and_narrates_every_step() -> None:
    package = logging.getLogger("charivo_fsm")
    handlers, propagate = list(package.handlers), package.propagate
    code, text, took = await _run()
    assert code == 0, text
    assert took < 10, text
    _check_layout(text)
    for number, title in enumerate(STEPS, 1):
        assert f"---- step {number}/{len(STEPS)}: {title}" in text
    for fragment in (
        # 1. start
        "tools: getWeather, setExpression, playMotion, lookAt",
        "session   started (session_id ",
        # 2. streamed text: deltas as they arrive, then the final text
        "delta     'Hello! '",
        'assistant final text: "Hello! I am Hiyori',
        # 3. tool calls
        'tool      call getWeather({"city": "Lisbon"})',
        "tool      result sent for getWeather:",
        'assistant final text: "getWeather says:',
        "avatar    expression -> happy",
        # 4. drop, backoff with progress, same session
        "fault: dropping the TCP connection",
        "reconnect attempt 1 in 0.30s (socket-closed) .",
        "reconnect attempt 2 in 0.60s (socket-closed) .",
        "reconnect succeeded after 2 attempt(s)",
        "ok: same engine session ",
        "ok: the reconnected session answers",
        # 5. coalesced updates
        "patch     #2 acknowledged",
        "ok: 3 update_session calls -> 2 session.update patches (#2 and #3 coalesced)",
        # 6. interrupt
        "response status interrupted",
        "no assistant:done",
        "usage     ",
        # 7. stop
        "session   ended (reason user)",
        "ok: no live connection, no task left",
        "demo passed: all 7 steps",
    ):
        assert fragment in text, fragment
    assert "FAIL" not in text
    assert "patch     #3" not in text
    # The session id shown at the start is the one that survives the reconnect.
    started = re.search(r"session_id ([0-9a-f]{8})\.\.\.", text)
    assert started is not None
    assert f"ok: same engine session {started.group(1)}..." in text
    # The demo's log capture is undone.
    assert package.handlers == handlers
    assert package.propagate is propagate


def _reject_update(step: int, server: LocalRealtimeServer) -> None:
    if step == 5:
        server.reject_next_session_update("demo sabotage: no patches today")


def _wrong_reply(step: int, server: LocalRealtimeServer) -> None:
    if step == 2:
        server.reply = lambda text: "Something else entirely"


def _refuse_every_recover(step: int, server: LocalRealtimeServer) -> None:
    if step == 4:
        for _ in range(3):  # with the demo's own refusal: every attempt fails
            server.reject_next_session_update("demo sabotage: go away")


def _no_tool_call(step: int, server: LocalRealtimeServer) -> None:
    if step == 3:
        server.tool_triggers = ()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("inject", "step", "reason"),
    [
        (_wrong_reply, 2, "final text 'Something else entirely'"),
        (_no_tool_call, 3, "got realtime:assistant:done before a getWeather tool call"),
        (_refuse_every_recover, 4, "realtime:reconnect:exhausted"),
        (_reject_update, 5, "update_session failed: demo sabotage: no patches today"),
    ],
    ids=["wrong-reply", "no-tool-call", "reconnect-exhausted", "rejected-update"],
)
async def test_demo_reports_the_step_that_misbehaves(
    inject: Callable[[int, LocalRealtimeServer], None], step: int, reason: str
) -> None:
    code, text, took = await _run(inject)
    assert code == 1, text
    assert took < 15, text
    _check_layout(text)
    assert f"FAIL      step {step}/7 ({STEPS[step - 1]}):" in text
    assert reason in " ".join(text.split()), text
    assert text.rstrip().endswith(f"demo FAILED at step {step}/7")
    assert "demo passed" not in text
    # Later steps never ran.
    assert f"---- step {step + 1}/7" not in text


@pytest.mark.anyio
async def test_live_mode_runs_the_same_script(monkeypatch: pytest.MonkeyPatch) -> None:
    """Live mode, pointed at the local server (the real API is out of reach here):
    the same steps run, step 4 is skipped with a note, the key comes from the environment."""
    monkeypatch.setenv("OPENAI_API_KEY", DEMO_API_KEY)
    server = LocalRealtimeServer(
        api_key=DEMO_API_KEY, tool_triggers=LOCAL_TRIGGERS, reply=_local_reply, delta_delay=0.02
    )
    async with server:
        # Let the server's listener tasks start first: the demo counts the tasks
        # running when it begins and checks that no more are left at its end.
        await anyio.sleep(0.1)
        code, text, _ = await _run(live=True, live_url=server.url, live_settle=0.1)
    assert code == 0, text
    _check_layout(text)
    assert "charivo-fsm demo (live, OpenAI Realtime API)" in text
    assert "note      skipped live: a server-side drop cannot be injected" in text
    assert "reconnect attempt" not in text
    assert "response status interrupted" in text
    assert "demo passed: all 7 steps" in text
    assert server.requests and all(request.authorized for request in server.requests)


def test_live_without_a_key_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert run_demo(live=True) == 2
    captured = capsys.readouterr()
    assert "OPENAI_API_KEY is not set" in captured.err
    assert captured.out == ""


def test_run_demo_in_process_on_trio(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_demo(backend="trio") == 0
    captured = capsys.readouterr()
    assert "demo passed: all 7 steps" in captured.out
    assert captured.err == ""


def test_cli_demo_subprocess() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OPENAI_API_KEY", None)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "charivo_fsm", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    took = time.perf_counter() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert took < 20
    assert "demo passed: all 7 steps" in result.stdout
    assert result.stderr == ""  # logging stays off the terminal
    _check_layout(result.stdout)
