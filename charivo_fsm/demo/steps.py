"""The session steps of the demo: start, streamed text, tool turns, coalesced
updates, an interrupt, stop.  The voice steps are in :mod:`.voice_steps`.

Each step is an ``async`` function of the shared :class:`~.script.Demo`; it
narrates what it does and raises :class:`~.narration.StepFailed` at the first
expectation that is not met.  Checks that need the local server's record (or
its scripted answers) run only when ``demo.server`` is set.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import anyio.abc

from .. import CharivoError
from .narration import StepFailed, expect, short
from .script import (
    CATALOG,
    CHARACTER,
    GREETING,
    SMILE_REQUEST,
    STORY,
    STORY_REQUEST,
    TONE_RULE,
    TRANSCRIPTION_MODEL,
    WEATHER_QUESTION,
    Demo,
    local_reply,
)
from .voice_steps import truncation

__all__ = [
    "step_interrupt",
    "step_message",
    "step_start",
    "step_stop",
    "step_tools",
    "step_updates",
]

TOOL_TURN_PAUSE = 0.1
"""Seconds the local server pauses between the parts of a tool-calling response
(its ``delta_delay``) in step 4, so the tool's output is sent while that response
is still open, as with a real model that keeps talking after a call."""


# ------------------------------------------------------------------ 1


async def step_start(demo: Demo) -> None:
    manager = demo.manager
    names = [tool.name for tool in manager.registered_tools()]
    voice = CHARACTER.voice.voice_id if CHARACTER.voice else None
    demo.say("setup", f"character {CHARACTER.name} ({CHARACTER.personality}), voice {voice}")
    demo.say("setup", f"avatar expressions: {', '.join(CATALOG.expressions)}")
    motions = ", ".join(f"{group} x{count}" for group, count in CATALOG.motions.items())
    demo.say("setup", f"avatar motions: {motions}")
    demo.say("setup", f"tools: {', '.join(names)}")
    demo.say("setup", "result projector: avatar (tool results -> realtime:expression/...)")
    size = len(demo.instructions)
    demo.say("setup", f"instructions: character block + avatar block, {size} chars")
    demo.say("setup", "voice: audio out (PCM16 24 kHz), turn detection server_vad")
    demo.say("setup", f"input transcription: {TRANSCRIPTION_MODEL}")
    mark = demo.narrator.mark()
    await manager.start_session(
        {
            "provider": "openai",
            "transport": "websocket",
            "instructions": demo.instructions,
            "output_modalities": ["audio"],
            "turn_detection": {"mode": "server_vad"},
            "input_transcription_model": TRANSCRIPTION_MODEL,
        }
    )
    state = manager.state
    expect(str(state.session.status) == "active", f"session status {state.session.status}")
    expect(str(state.connection) == "connected", f"connection {state.connection}")
    demo.session_id = manager.session_id
    expect(demo.session_id is not None, "no session_id while active")
    starts = demo.narrator.since(mark, "realtime:session:start")
    expect(len(starts) == 1, f"{len(starts)} realtime:session:start events (expected 1)")
    expect(starts[0].reason == "user", f"session:start reason {starts[0].reason}")
    sent = demo.transport.config
    expect(sent is not None, "the transport has no acknowledged config")
    assert sent is not None
    sent_tools = [tool.name for tool in sent.tools or ()]
    expect(sent_tools == names, f"tools sent {sent_tools}, expected {names}")
    expect(sent.voice == voice, f"voice sent {sent.voice}, expected {voice}")
    expect(sent.instructions == demo.instructions, "instructions sent differ")
    if demo.server is not None:
        updates = demo.server.received_of("session.update")
        expect(len(updates) == 1, f"server got {len(updates)} session.update (expected 1)")
        session = updates[0]["session"]
        server_tools = [tool["name"] for tool in session.get("tools", ())]
        expect(server_tools == names, f"server got tools {server_tools}")
        audio = session.get("audio", {})
        got_voice = audio.get("output", {}).get("voice")
        expect(got_voice == voice, f"server got voice {got_voice}")
        expect("Avatar control:" in session.get("instructions", ""), "no avatar instructions")
        expect(session.get("output_modalities") == ["audio"], "the session is not audio out")
        detection = audio.get("input", {}).get("turn_detection") or {}
        expect(detection.get("type") == "server_vad", f"turn detection {detection}")
        expect(detection.get("interrupt_response") is True, "speech would not interrupt")
    demo.check_no_errors(mark)
    sid = short(demo.session_id)
    demo.ok(f"session active, {len(names)} tools, voice {voice}, session_id {sid}")


# ------------------------------------------------------------------ 2


async def step_message(demo: Demo) -> None:
    narrator = demo.narrator
    mark = narrator.mark()
    narrator.show_deltas = True
    try:
        final = await demo.answer(GREETING, "a streamed answer")
    finally:
        narrator.show_deltas = False
    done_at = narrator.found_at
    events = narrator.events
    start = max(
        (i for i in range(mark, done_at) if events[i][0] == "realtime:assistant:start"),
        default=mark,
    )
    deltas = [p.text for n, p in events[start:done_at] if n == "realtime:assistant:delta"]
    expect(len(deltas) >= 2, f"{len(deltas)} deltas streamed (expected several)")
    expect("".join(deltas) == final, "the deltas do not add up to the final text")
    if demo.server is not None:
        expected = local_reply(GREETING)
        expect(final == expected, f"final text {final!r}, expected {expected!r}")
    state = demo.manager.state
    # (A live model may already be answering again after an avatar tool call.)
    if not any(n == "realtime:assistant:start" for n, _ in events[done_at:]):
        status = str(state.response.status)
        expect(status == "completed", f"response {status}")
        expect(state.response.text == final, "state.response.text is not the final text")
    chunks = len(narrator.since(start, "realtime:audio:delta"))
    expect(chunks > 0, "no realtime:audio:delta: the answer was not spoken")
    demo.check_no_errors(mark)
    demo.ok(f"{len(deltas)} deltas streamed (the audio transcript), {chunks} audio chunks")
    demo.ok("response completed, its text in the state")


# ------------------------------------------------------------------ 4


def _describe(side: str, event: dict[str, Any]) -> str:
    """One line of the server's record: who sent what."""
    kind = str(event.get("type"))
    if kind == "conversation.item.create":
        item = event.get("item") or {}
        if item.get("type") == "function_call_output":
            return f"client  {kind} (function_call_output {short(item.get('call_id'), 12)})"
        return f"client  {kind} ({item.get('type')})"
    if kind in ("response.done", "response.created"):
        response = event.get("response") or {}
        status = f", {response.get('status')}" if kind == "response.done" else ""
        return f"server  {kind} ({short(response.get('id'), 12)}{status})"
    if kind == "response.function_call_arguments.done":
        return f"server  {kind} ({event.get('name')})"
    return f"{side:<7} {kind}"


_SHOWN = frozenset(
    {
        "conversation.item.create",
        "response.create",
        "response.created",
        "response.done",
        "response.function_call_arguments.done",
        "error",
    }
)


def _check_tool_turn_order(demo: Demo, journal_mark: int, call_id: str) -> None:
    """From the server's record: the output item went out while the calling
    response was open, ``response.create`` only after its ``response.done``, once."""
    assert demo.journal is not None
    order = demo.journal.since(journal_mark)
    lines: list[str] = []
    output_at = done_at = -1
    calling: str | None = None
    creates: list[int] = []
    for index, (side, event) in enumerate(order):
        kind = event.get("type")
        if kind == "response.function_call_arguments.done" and event.get("call_id") == call_id:
            calling = event.get("response_id")
        item = event.get("item") or {}
        if (
            side == "client"
            and kind == "conversation.item.create"
            and item.get("type") == "function_call_output"
            and item.get("call_id") == call_id
        ):
            output_at = index
        if kind == "response.done" and (event.get("response") or {}).get("id") == calling:
            done_at = index
        if side == "client" and kind == "response.create":
            creates.append(index)
        if kind in _SHOWN and (side == "server" or kind != "response.created"):
            lines.append(_describe(side, event))
    for line in lines:
        demo.say("order", line)
    expect(calling is not None, "the server's record has no call for the tool")
    expect(output_at >= 0, "the server's record has no function_call_output")
    expect(done_at >= 0, "the calling response has no response.done")
    expect(output_at < done_at, "the output was not sent at once (only after response.done)")
    after = [index for index in creates if index > output_at]
    expect(len(after) >= 1, "no response.create after the tool output")
    expect(after[0] > done_at, "response.create was sent before the calling response was done")
    # The first create after the output is the tool turn's; a second one would
    # be a duplicate (the answer's response is the only other one in the step).
    expect(len(after) == 1, f"{len(after)} response.create for one tool turn (expected 1)")
    errors = [e for side, e in order if side == "server" and e.get("type") == "error"]
    expect(not errors, f"the server refused something: {errors[0]['error'] if errors else ''}")


async def step_tools(demo: Demo) -> None:
    narrator, server = demo.narrator, demo.server
    mark = narrator.mark()
    journal_mark = demo.journal.mark() if demo.journal is not None else 0
    dones = len(server.sent_of("response.done")) if server is not None else 0
    if server is not None:
        server.delta_delay = TOOL_TURN_PAUSE
        demo.say("server", f"the model pauses {TOOL_TURN_PAUSE:g}s between parts of a response")
    try:
        demo.say("user", f"send_message({WEATHER_QUESTION!r})")
        await demo.manager.send_message(WEATHER_QUESTION)
        call = await narrator.wait_for(
            "realtime:tool:call",
            after=mark,
            what="a getWeather tool call",
            where=lambda p: p.name == "getWeather",
            fail_when=lambda n, p: n == "realtime:assistant:done" and bool(p.text),
        )
        result = await narrator.wait_for(
            "realtime:tool:result",
            after=mark,
            what="the getWeather result",
            where=lambda p: p.call_id == call.call_id,
            fail_when=lambda n, p: n == "realtime:tool:error" and p.call_id == call.call_id,
        )
    finally:
        if server is not None:
            server.delta_delay = 0.0  # the pause in progress still runs out
    done = await narrator.wait_for(
        "realtime:assistant:done",
        after=narrator.found_at,
        what="an answer after the tool result",
        where=lambda p: bool(p.text),
    )
    answer: str = done.text
    expect(isinstance(call.args.get("city"), str), f"getWeather args {dict(call.args)}")
    expect(len(demo.weather_calls) >= 1, "the getWeather handler did not run")
    expect(result.output.get("city") == call.args["city"], "the result names another city")
    errors = narrator.since(mark, "realtime:tool:error")
    expect(not errors, f"tool error: {errors[0].error.message}" if errors else "")
    if server is not None:
        expect(demo.weather_calls == ["Lisbon"], f"handler calls {demo.weather_calls}")
        outputs = [
            e["item"]
            for e in server.received_of("conversation.item.create")
            if e["item"].get("type") == "function_call_output"
        ]
        expect(len(outputs) == 1, f"server got {len(outputs)} tool outputs (expected 1)")
        expect(outputs[0]["call_id"] == call.call_id, "the output names another call_id")
        expect(
            json.loads(outputs[0]["output"]) == dict(result.output),
            "the server got another output than the handler returned",
        )
        expect(answer.startswith("getWeather says:"), f"answer {answer!r}")
        # The server records an event once it is sent: wait for the answer's
        # response.done to be in the record (the client may have it first).
        await server.wait_for_sent("response.done", dones + 2, timeout=2.0)
        demo.say("server", "its record of the tool turn, in order:")
        _check_tool_turn_order(demo, journal_mark, call.call_id)
        demo.ok("the output went out at once, response.create only after response.done, once")
    demo.ok(f"getWeather({call.args['city']}) ran once, its result was sent, then answered")

    mark = narrator.mark()
    await demo.answer(SMILE_REQUEST, "an answer after the avatar tool")
    expressions = narrator.since(mark, "realtime:expression")
    if server is not None:
        expect(
            [p.expression_id for p in expressions] == ["happy"],
            f"expression events {expressions}",
        )
        demo.ok("setExpression result projected to realtime:expression (happy)")
    elif expressions:
        demo.ok(f"the model called setExpression ({expressions[-1].expression_id})")
    else:
        demo.say("note", "the model chose not to call setExpression (its choice, live)")
    demo.check_no_errors(mark)


# ------------------------------------------------------------------ 8


async def step_updates(demo: Demo) -> None:
    manager, server = demo.manager, demo.server
    mark = demo.narrator.mark()
    log_mark = len(demo.logs.events)
    server_mark = len(server.received_of("session.update")) if server else 0
    toned = demo.instructions + "\n" + TONE_RULE
    requests: list[tuple[str, dict[str, Any]]] = [
        ("max_tokens -> 400", {"max_tokens": 400}),
        ("instructions += tone rule", {"instructions": toned}),
        ("max_tokens -> 300", {"max_tokens": 300}),
    ]
    outcomes: dict[int, CharivoError | None] = {}

    async def issue(
        number: int,
        config: dict[str, Any],
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        # started() first: update_session registers the request before its
        # first await, so the calls enter the manager in this order.
        task_status.started()
        try:
            await manager.update_session(config)
        except CharivoError as error:
            outcomes[number] = error
            demo.say("update", f"#{number} failed: {error.message}")
            return
        outcomes[number] = None
        demo.say("update", f"#{number} returned")

    with anyio.fail_after(demo.timeout):
        async with anyio.create_task_group() as group:
            for number, (label, change) in enumerate(requests, 1):
                demo.say("update", f"#{number} update_session({label}) issued")
                await group.start(issue, number, change)
    failed = {n: e for n, e in outcomes.items() if e is not None}
    expect(not failed, f"update_session failed: {next(iter(failed.values()), None)}")
    patches = demo.logs.count("patch.started", log_mark)
    expect(1 <= patches <= 2, f"{patches} patches for 3 calls (expected at most 2)")
    config = manager.state.session.config
    expect(config is not None and config.max_tokens == 300, "max_tokens is not 300")
    expect(config is not None and config.instructions == toned, "instructions not updated")
    sent = demo.transport.config
    expect(sent is not None and sent.max_tokens == 300, "the transport has another config")
    if server is not None:
        updates = server.received_of("session.update")[server_mark:]
        expect(len(updates) == patches, f"server got {len(updates)} session.update")
        last = updates[-1]["session"]
        expect(last.get("max_output_tokens") == 300, "the last patch is not the latest")
        expect(last.get("instructions") == toned, "the last patch lacks the tone rule")
    demo.check_no_errors(mark)
    coalesced = " (#2 and #3 coalesced)" if patches == 2 else ""
    demo.ok(f"3 update_session calls -> {patches} session.update patches{coalesced}")
    demo.ok("the latest config won: max_tokens 300, tone rule in the instructions")


# ------------------------------------------------------------------ 9


async def step_interrupt(demo: Demo) -> None:
    narrator, server = demo.narrator, demo.server
    truncates = len(server.received_of("conversation.item.truncate")) if server else 0
    if server is not None:
        server.delta_delay = 0.04  # slow the stream down so it can be interrupted
    try:
        mark = narrator.mark()
        demo.say("user", f"send_message({STORY_REQUEST!r})")
        await demo.manager.send_message(STORY_REQUEST)
        first = await narrator.wait_for(
            "realtime:audio:delta", after=mark, what="the story's first audio chunk"
        )
        first_at = anyio.current_time()
        await narrator.wait_for(
            "realtime:assistant:delta",
            after=mark,
            what="the third delta",
            where=lambda _p: len(narrator.since(mark, "realtime:assistant:delta")) >= 3,
        )
        cut = narrator.mark()
        before = round((anyio.current_time() - first_at) * 1000)
        await demo.manager.interrupt()
        after = round((anyio.current_time() - first_at) * 1000)
        received = narrator.audio_ms(first.item_id)  # what the engine had at the cut
        status = str(demo.manager.state.response.status)
        demo.say("interrupt", f"interrupt() sent response.cancel; response status {status}")
        expect(status == "interrupted", f"response status {status} after interrupt()")
        try:
            await narrator.wait_for(
                "realtime:usage",
                after=cut,
                what="the cancelled response's realtime:usage",
                timeout=None if server is not None else 5.0,
            )
        except StepFailed:
            if server is not None:
                raise
            # The real API may end a cancelled response without usage.
            demo.say("note", "no realtime:usage for the cancelled response within 5s")
        if server is not None:
            truncate = await truncation(server, truncates)
    finally:
        if server is not None:
            server.delta_delay = 0.0
    state = demo.manager.state
    expect(str(state.response.status) == "interrupted", f"response {state.response.status}")
    expect(not narrator.since(mark, "realtime:assistant:done"), "assistant:done emitted")
    cut_at = narrator.index_since(cut, "tts:audio:end")  # emitted by interrupt() itself
    expect(cut_at is not None, "no tts:audio:end after interrupt()")
    late = len(narrator.since(cut_at or cut, "realtime:audio:delta"))
    # Chunks the server sent before it saw response.cancel are dropped by the engine
    # (the audio machine's muted state): nothing of the cut item plays after the cut.
    expect(late == 0, f"{late} audio chunk(s) of the cut item were emitted after the cut")
    partial = state.response.text
    demo.say("state", f"response interrupted, partial text kept: {partial[:40]!r}...")
    if server is not None:
        expect(len(server.received_of("response.cancel")) == 1, "no response.cancel sent")
        last = server.sent_of("response.done")[-1]["response"]
        expect(last["status"] == "cancelled", f"server response status {last['status']}")
        expect(0 < len(partial) < len(STORY), "the partial text is not partial")
        end = truncate["audio_end_ms"]
        demo.say(
            "truncate",
            f"conversation.item.truncate at {end} ms of {received} ms received (item"
            f" {short(truncate['item_id'])})",
        )
        expect(truncate["item_id"] == first.item_id, "another item was truncated")
        expect(end < received, f"truncated at {end} ms, not below the {received} ms received")
        # No mark_played: the engine assumed real-time playback from the first chunk.
        expect(
            before - 50 <= end <= after + 50,
            f"truncated at {end} ms, expected the time since the first chunk ({before} ms)",
        )
        demo.ok(f"no mark_played: cut at the time since the first chunk, {end} ms")
    demo.check_no_errors(mark)
    demo.ok(f"interrupted after {len(partial.split())} words, no assistant:done")


# ------------------------------------------------------------------ 10


async def step_stop(demo: Demo) -> None:
    mark = demo.narrator.mark()
    demo.say("user", "stop_session()")
    await demo.manager.stop_session()
    end = await demo.narrator.wait_for(
        "realtime:session:end", after=mark, fail_on=("realtime:error",)
    )
    expect(end.reason == "user", f"session:end reason {end.reason}")
    state = demo.manager.state
    expect(str(state.session.status) == "stopped", f"session status {state.session.status}")
    expect(demo.manager.session_id is None, "session_id still set after stop")
    expect(not demo.transport.connected, "the transport is still connected")
    demo.check_no_errors(mark)
    demo.ok("session stopped (reason user), transport disconnected")
