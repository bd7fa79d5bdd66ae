"""The voice steps of the demo: the model's audio into a WAV file, a barge-in
that truncates, push to talk, and a reconnect after which the model still
knows what was said.

Microphone audio is the synthetic voiced signal of
:func:`charivo_fsm.testing.audio.speech` (PCM16 mono 24 kHz, well above the
server VAD's threshold) and digital silence.  The demo plays nothing aloud: it
acts as the app's player where it matters (step 5 reports a playback position
with ``mark_played``) and writes the model's voice to a WAV file instead.
"""

from __future__ import annotations

import base64
import wave
from collections import Counter
from pathlib import Path
from typing import Any, Final

import anyio

from ..events import AssistantResponseCompleted, TransportEvent
from ..model import RealtimeSessionConfig
from ..testing.audio import silence, speech
from ..testing.server import LocalRealtimeServer
from ..testing.service_rules import placeholder_transcript
from ..transports.openai import OpenAIRealtimeTransport
from .narration import PCM16_BYTES_PER_MS, StepFailed, expect, short
from .script import (
    DEMO_API_KEY,
    GREETING,
    MEMORY_QUESTION,
    STORY_REQUEST,
    VOICE_REPLY,
    VOICE_REQUEST,
    WAV_NAME,
    Demo,
)

__all__ = [
    "PLAYBACK_BUFFER_MS",
    "PTT_SPEECH_MS",
    "RECONNECT_DELAYS",
    "step_barge_in",
    "step_push_to_talk",
    "step_reconnect",
    "step_voice_wav",
    "truncation",
    "write_wav",
]

SAMPLE_RATE: Final = 24_000
RECONNECT_DELAYS: Final = (0.3, 0.6, 1.2)
PLAYBACK_BUFFER_MS: Final = 200
"""How far the demo's pretend player runs behind the first chunk (a jitter buffer)."""
BARGE_IN_AFTER: Final = 0.6
"""Seconds of the story the user listens to before speaking."""
SPEECH_MS: Final = 300
TURN_END_SILENCE_MS: Final = 700  # more than the server VAD's 500 ms of silence
PTT_FALSE_START_MS: Final = 200
PTT_SPEECH_MS: Final = 1200
PTT_CHUNK_MS: Final = 300
FORGOTTEN: Final = "I don't remember anything you said before this."
"""The local server's answer to a memory question in an empty conversation."""


def write_wav(path: Path, pcm16: bytes) -> float:
    """Write PCM16 mono 24 kHz audio to ``path`` as a WAV file; returns its seconds."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(pcm16)
    return len(pcm16) / 2 / SAMPLE_RATE


def _decoded_audio(events: list[dict[str, Any]], item_id: str | None) -> bytes:
    """The audio the server sent for ``item_id`` (its ``response.output_audio.delta``)."""
    return b"".join(
        base64.b64decode(event["delta"])
        for event in events
        if event.get("type") == "response.output_audio.delta" and event.get("item_id") == item_id
    )


# ------------------------------------------------------------------ 3


async def step_voice_wav(demo: Demo) -> None:
    narrator, server = demo.narrator, demo.server
    mark = narrator.mark()
    final = await demo.answer(VOICE_REQUEST, "a spoken answer")
    done_at = narrator.found_at
    chunks = [p for n, p in narrator.events[mark:done_at] if n == "realtime:audio:delta"]
    expect(bool(chunks), "no realtime:audio:delta before realtime:assistant:done")
    items = list(dict.fromkeys(p.item_id for p in chunks))
    expect(len(items) == 1, f"audio for {len(items)} items (expected one spoken answer)")
    audio = b"".join(p.audio for p in chunks)
    expect(len(audio) % 2 == 0, f"{len(audio)} bytes: not whole PCM16 samples")
    path = demo.output_dir() / WAV_NAME
    seconds = write_wav(path, audio)
    demo.wav_path = path
    demo.say(
        "wav", f"{len(chunks)} realtime:audio:delta chunks, {len(audio)} bytes, {seconds:.2f} s"
    )
    demo.timeline.path("wav", "wrote", str(path))
    with wave.open(str(path), "rb") as wav:
        shape = (wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes())
    expect(shape == (1, 2, SAMPLE_RATE, len(audio) // 2), f"the WAV file reads back as {shape}")
    expect(seconds > 0, "the WAV file is empty")
    levels = len(narrator.since(mark, "tts:lipsync:update"))
    expect(levels > 0, "no tts:lipsync:update for the spoken answer")
    if server is not None:
        expect(final == VOICE_REPLY, f"final text {final!r}, expected {VOICE_REPLY!r}")
        sent = _decoded_audio(server.sent, items[0])
        expect(sent == audio, f"the server sent {len(sent)} bytes, the WAV holds {len(audio)}")
        assert server.last_session is not None
        produced = server.last_session.audio_of(str(items[0]))
        expect(
            produced == len(audio) // PCM16_BYTES_PER_MS,
            f"the server produced {produced} ms, the WAV lasts {seconds * 1000:.0f} ms",
        )
        demo.ok(f"{seconds:.2f} s of PCM16 mono 24 kHz, byte for byte what the server sent")
    else:
        demo.ok(f"{seconds:.2f} s of PCM16 mono 24 kHz written")
    demo.ok(f"{levels} lip-sync levels came with it")
    demo.check_no_errors(mark)


# ------------------------------------------------------------------ 5


def _audio_ms_before(demo: Demo, index: int, item_id: str | None) -> int:
    """Milliseconds of audio received for ``item_id`` before event ``index``."""
    size = sum(
        len(p.audio)
        for n, p in demo.narrator.events[:index]
        if n == "realtime:audio:delta" and p.item_id == item_id
    )
    return size // PCM16_BYTES_PER_MS


def _response_of(events: list[dict[str, Any]], item_id: str | None) -> dict[str, Any] | None:
    """The ``response`` of the server's ``response.done`` that produced ``item_id``."""
    for event in events:
        if event.get("type") != "response.done":
            continue
        response: dict[str, Any] = event.get("response") or {}
        if any(item.get("id") == item_id for item in response.get("output") or ()):
            return response
    return None


async def truncation(server: LocalRealtimeServer, before: int) -> dict[str, Any]:
    """The next ``conversation.item.truncate`` the server gets (after ``before`` of them)."""
    try:
        return await server.wait_for_event("conversation.item.truncate", before + 1, timeout=2.0)
    except TimeoutError:
        raise StepFailed("the server got no conversation.item.truncate within 2s") from None


async def step_barge_in(demo: Demo) -> None:
    narrator, server, manager = demo.narrator, demo.server, demo.manager
    mark = narrator.mark()
    cancels = len(server.received_of("response.cancel")) if server else 0
    truncates = len(server.received_of("conversation.item.truncate")) if server else 0
    if server is not None:
        server.audio_pace = 1.0
        demo.say("server", "this answer's audio comes in real time (audio_pace=1.0)")
    try:
        demo.say("user", f"send_message({STORY_REQUEST!r})")
        await manager.send_message(STORY_REQUEST)
        first = await narrator.wait_for(
            "realtime:audio:delta", after=mark, what="the story's first audio chunk"
        )
        item = first.item_id
        expect(item is not None, "the story's audio has no item id")
        started = anyio.current_time()
        demo.say("player", f"plays item {short(item)} from now, {PLAYBACK_BUFFER_MS} ms behind")
        await anyio.sleep(BARGE_IN_AFTER)
        if str(manager.state.response.status) != "responding":
            expect(demo.live, "the story was over before the user spoke")
            demo.say("note", "the model had finished the story already: no barge-in live")
            return
        elapsed = round((anyio.current_time() - started) * 1000)
        played = max(0, min(elapsed - PLAYBACK_BUFFER_MS, narrator.audio_ms(item)))
        manager.mark_played(item, played)
        demo.say(
            "player", f"mark_played({short(item)}, {played}); {narrator.audio_ms(item)} ms received"
        )
        cut = narrator.mark()
        demo.say("user", f"microphone: {SPEECH_MS} ms of speech in chunks of 100 ms")
        for _ in range(SPEECH_MS // 100):
            await manager.send_audio_chunk(speech(100))
        try:
            await narrator.wait_for(
                "realtime:user:speech:start",
                after=cut,
                what="realtime:user:speech:start (the server's VAD hearing the speech)",
            )
        except StepFailed:
            if not demo.live:
                raise
            demo.say("note", "the service's VAD did not take the synthetic signal for speech")
            return
        start_at = narrator.found_at
    finally:
        if server is not None:
            server.audio_pace = None
    # The engine's side of the barge-in happens at once, with the speech event.
    before = [n for n, _ in narrator.events[mark:start_at]]
    expect("realtime:assistant:done" not in before, "the story was done before the barge-in")
    ends = narrator.index_since(start_at, "tts:audio:end")
    expect(ends is not None, "no tts:audio:end after realtime:user:speech:start")
    received = _audio_ms_before(demo, start_at, item)
    await narrator.wait_for(
        "realtime:state",
        after=start_at,
        what="the story's response ending interrupted",
        where=lambda p: str(p.state.response.status) == "interrupted",
    )
    demo.say("state", "the story's response ended interrupted, no assistant:done")
    if server is not None:
        truncate = await truncation(server, truncates)
        end = truncate["audio_end_ms"]
        demo.say(
            "truncate",
            f"server got conversation.item.truncate {short(truncate['item_id'])} at {end} ms",
        )
        expect(truncate["item_id"] == item, "another item was truncated")
        expect(end == played, f"truncated at {end} ms, not at the {played} ms played")
        expect(end < received, f"truncated at {end} ms, not below the {received} ms received")
        response = _response_of(server.sent, item)
        expect(response is not None, "the server never ended the story's response")
        assert response is not None
        status = (response.get("status"), (response.get("status_details") or {}).get("reason"))
        expect(status == ("cancelled", "turn_detected"), f"the story's response ended {status}")
        expect(
            len(server.received_of("response.cancel")) == cancels,
            "the client sent response.cancel (the service's turn detection cancels)",
        )
        demo.ok("realtime:user:speech:start, then tts:audio:end at once (barge-in)")
        demo.ok(f"truncated at the {end} ms played, below the {received} ms received")
        demo.ok("the service cancelled the response itself (turn_detected)")
    else:
        demo.ok("realtime:user:speech:start, then tts:audio:end (barge-in)")
    # The user's turn goes on; silence ends it and the model answers it.
    turn = narrator.mark()
    demo.say("user", f"microphone: {TURN_END_SILENCE_MS} ms of silence (the turn ends)")
    await manager.send_audio_chunk(silence(TURN_END_SILENCE_MS))
    await narrator.wait_for("realtime:user:speech:stop", after=turn)
    done = await narrator.wait_for(
        "realtime:assistant:done",
        after=turn,
        what="the answer to the user's turn",
        where=lambda p: bool(p.text),
    )
    if server is not None:
        heard = narrator.since(turn, "realtime:user:transcript")
        expect(len(heard) == 1, f"{len(heard)} user transcripts for one turn")
        expect(heard[0].text in done.text, "the answer is not about what the user said")
        demo.ok(f"the model answered the user's turn, heard as {heard[0].text!r}")
    demo.check_no_errors(mark)


# ------------------------------------------------------------------ 6


def _client_order(events: list[dict[str, Any]]) -> list[str]:
    """Client event types, consecutive appends counted as one entry."""
    order: list[str] = []
    for event in events:
        kind = str(event.get("type"))
        if kind == "input_audio_buffer.append" and order and order[-1].startswith(kind):
            count = int(order[-1].rsplit("x", 1)[1]) + 1 if " x" in order[-1] else 2
            order[-1] = f"{kind} x{count}"
        else:
            order.append(kind)
    return order


async def step_push_to_talk(demo: Demo) -> None:
    narrator, server, manager = demo.narrator, demo.server, demo.manager
    mark = narrator.mark()
    server_mark = len(server.received) if server else 0
    demo.say("user", 'update_session({"turn_detection": {"mode": "manual"}})')
    await manager.update_session({"turn_detection": {"mode": "manual"}})
    config = manager.state.session.config
    detection = config.turn_detection if config is not None else None
    expect(detection is not None and detection.mode == "manual", f"turn detection {detection}")
    demo.say("user", f"button down: {PTT_FALSE_START_MS} ms of speech; clear_audio() (false start)")
    await manager.send_audio_chunk(speech(PTT_FALSE_START_MS))
    await manager.clear_audio()
    chunks = PTT_SPEECH_MS // PTT_CHUNK_MS
    demo.say("user", f"button down: {PTT_SPEECH_MS} ms of speech in {chunks} chunks")
    for _ in range(chunks):
        await manager.send_audio_chunk(speech(PTT_CHUNK_MS))
    demo.say("user", "button up: commit_audio()")
    await manager.commit_audio()
    done = await narrator.wait_for(
        "realtime:assistant:done",
        after=mark,
        what="an answer to the committed audio",
        where=lambda p: bool(p.text),
    )
    starts = narrator.since(mark, "realtime:user:speech:start")
    expect(not starts, "the service's turn detection heard speech in push to talk")
    if server is not None:
        update = server.received_of("session.update")[-1]["session"]
        expect(
            update.get("audio", {}).get("input", {}).get("turn_detection", "?") is None,
            "session.update did not switch turn detection off (null)",
        )
        sent = _client_order(server.received[server_mark:])
        for entry in sent:
            demo.say("order", f"client  {entry}")
        wanted = [
            "session.update",
            "input_audio_buffer.append",
            "input_audio_buffer.clear",
            f"input_audio_buffer.append x{chunks}",
            "input_audio_buffer.commit",
            "response.create",
        ]
        expect(sent == wanted, f"the server got {sent}")
        heard = narrator.since(mark, "realtime:user:transcript")
        expected = placeholder_transcript(PTT_SPEECH_MS)
        expect(
            [p.text for p in heard] == [expected],
            f"transcripts {[p.text for p in heard]}, expected [{expected!r}]: "
            "the cleared audio should not be part of the turn",
        )
        expect(expected in done.text, f"the answer {done.text!r} is not about the turn")
        demo.ok(f"no VAD; the cleared {PTT_FALSE_START_MS} ms dropped; the model heard {expected}")
    demo.check_no_errors(mark)
    demo.ok("commit_audio() ended the turn and a response came")


# ------------------------------------------------------------------ 7


async def step_reconnect(demo: Demo) -> None:
    narrator, server, manager = demo.narrator, demo.server, demo.manager
    if server is None:
        demo.say("note", "skipped live: a server-side drop cannot be injected into the")
        demo.say("note", "real OpenAI Realtime API (the local run covers it)")
        return
    mark = narrator.mark()
    before = server.connections
    old = server.sent_of("session.created")[-1]["session"]["id"]
    history = len(demo.transport.history)
    creates = len(server.received_of("conversation.item.create"))
    demo.say("replay", f"the transport's history holds {history} items to replay")
    server.reject_next_session_update("demo: the first recover is refused")
    demo.say("server", "fault: the next session.update will be refused (first recover)")
    demo.say("server", "fault: dropping the TCP connection (no close frame)")
    await server.drop_connection()
    success = await narrator.wait_for(
        "realtime:reconnect:success",
        after=mark,
        what="realtime:reconnect:success",
        fail_on=("realtime:reconnect:exhausted", "realtime:session:end"),
    )
    attempts = narrator.since(mark, "realtime:reconnect:attempt")
    expect(
        [a.attempt for a in attempts] == [1, 2],
        f"reconnect attempts {[a.attempt for a in attempts]} (expected 1, 2)",
    )
    expect(
        [a.delay_ms for a in attempts] == [round(d * 1000) for d in RECONNECT_DELAYS[:2]],
        f"backoff delays {[a.delay_ms for a in attempts]} ms",
    )
    expect(success.attempts == 2, f"succeeded after {success.attempts} attempts")
    expect(
        manager.session_id == demo.session_id,
        f"session_id changed: {demo.session_id} -> {manager.session_id}",
    )
    boundaries = narrator.since(mark, "realtime:session:start") + narrator.since(
        mark, "realtime:session:end"
    )
    expect(not boundaries, "the reconnect started or ended a session")
    expect(server.connections == before + 2, "expected two new connections (1 refused)")
    new = server.sent_of("session.created")[-1]["session"]["id"]
    demo.say("server", f"new socket: server session {short(new, 10)} (was {short(old, 10)})")
    demo.ok(f"same engine session {short(demo.session_id)} after 2 attempts")
    # What the transport replayed, from the server's record of the new socket.
    try:
        await server.wait_for_event("conversation.item.create", creates + history, timeout=2.0)
    except TimeoutError:
        got = len(server.received_of("conversation.item.create")) - creates
        raise StepFailed(f"{got} of the {history} history items were replayed") from None
    replayed = [e["item"] for e in server.received_of("conversation.item.create")[creates:]]
    kinds = Counter(_kind(item) for item in replayed)
    parts = ", ".join(f"{count} {kind}" for kind, count in kinds.items())
    demo.say("replay", f"{len(replayed)} conversation.item.create: {parts}")
    expect(len(replayed) == history, f"{len(replayed)} items replayed, {history} in the history")
    expect(len(replayed) > 0, "nothing was replayed")
    audio = [
        part.get("type")
        for item in replayed
        for part in item.get("content") or ()
        if "audio" in str(part.get("type"))
    ]
    expect(not audio, f"audio was replayed: {audio}")
    final = await demo.answer(MEMORY_QUESTION, "an answer after the reconnect")
    expect(GREETING in final, f"the answer {final!r} does not quote {GREETING!r}")
    expect(manager.session_id == demo.session_id, "session_id changed")
    demo.check_no_errors(mark)
    demo.ok("after the reconnect the model still knows what was said first")
    await _without_replay(demo)


def _kind(item: dict[str, Any]) -> str:
    kind = str(item.get("type"))
    if kind == "message":
        return str(item.get("role"))
    return {"function_call": "call", "function_call_output": "output"}.get(kind, kind)


async def _without_replay(demo: Demo) -> None:
    """The same reconnect with ``max_replay_items=0``, on a transport of its own:
    the new service session starts empty, so the model cannot know."""
    server = demo.server
    assert server is not None
    demo.say("contrast", "the same with max_replay_items=0, on a second transport:")
    answers: list[str] = []
    arrived = anyio.Event()

    def on_event(event: TransportEvent) -> None:
        nonlocal arrived
        if isinstance(event, AssistantResponseCompleted):
            answers.append(event.text)
            arrived.set()

    async def ask(text: str) -> str:
        nonlocal arrived
        arrived = anyio.Event()
        await transport.send_text(text)
        await arrived.wait()
        return answers[-1]

    transport = OpenAIRealtimeTransport(api_key=DEMO_API_KEY, url=server.url, max_replay_items=0)
    transport.on_event(on_event)
    config = RealtimeSessionConfig(instructions=demo.instructions, output_modalities=("text",))
    with anyio.fail_after(demo.timeout):
        async with transport:
            await transport.connect(config)
            await ask(GREETING)
            await transport.recover(config)  # a new socket, as after a drop
            answer = await ask(MEMORY_QUESTION)
    demo.say("contrast", f"{MEMORY_QUESTION!r} -> {answer!r}")
    expect(answer == FORGOTTEN, f"without replay the model answered {answer!r}")
    demo.ok("without replay it would not know")
