"""Workload g's clients, one process per run: ``python -m benchmarks.voice_client
--kind charivo|floor|peer --sessions N --url ws://... [--warmup S] [--seconds S]``
prints one JSON object.

Each kind opens N sessions against :mod:`benchmarks.voice_server`, sends 40 ms of
microphone audio (PCM16 24 kHz, base64 in ``input_audio_buffer.append``) every
40 ms per session from a task of its own, answers the ``noop`` tool calls, and
receives the stream.  After ``--warmup`` seconds it measures for ``--seconds``:

* CPU seconds of this process per session-second (``time.process_time``);
* the event lag of every assistant audio delta: from the server's send time
  (stamped into the audio, see :func:`benchmarks.voice_server.read_stamp`) until
  the point where the client hands the event to the application -- the emitter of
  charivo, the ``async for event in session`` loop of the peer, the decoded
  audio of the floor;
* how late the microphone tasks ran against their schedule;
* the resident memory added per session (``/proc/self/statm``: after the sessions
  were opened and ran the warm-up, minus before the first was opened).

The kinds:

``charivo``
    :class:`~charivo_fsm.RealtimeManager` + :class:`OpenAIRealtimeTransport` per
    session, the ``noop`` tool registered, an emitter that notes the lag of
    ``realtime:audio:delta`` and counts the rest.
``floor``
    a bare ``websockets`` client: ``json.loads`` of every message, ``b64decode`` of
    the audio deltas, the tool's output and ``response.create`` after a
    function-call response is done.  Nothing less can receive this stream.
``peer``
    ``openai-agents``: a :class:`agents.realtime.RealtimeAgent` with a no-op
    ``noop`` function tool, run by :class:`~agents.realtime.RealtimeRunner` on its
    OpenAI WebSocket model pointed at the same server; tracing disabled.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .voice_server import STAMP, TOOL_NAME

KEY = "sk-bench-local-key"
CHUNK_S = 0.040
MIC = b"".join(
    int(8000 * ((i % 60) / 30 - 1)).to_bytes(2, "little", signed=True) for i in range(960)
)
"""40 ms of PCM16 24 kHz (a 400 Hz sawtooth; the server does not listen to it)."""
CONNECT_BATCH = 25
NOOP_PARAMETERS = {
    "type": "object",
    "properties": {"n": {"type": "integer"}},
    "required": ["n"],
}


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


class Recorder:
    """Lags of the audio deltas and of the microphone tasks, kept while measuring."""

    def __init__(self) -> None:
        self.measuring = False
        self.lags: list[float] = []
        self.mic_lags: list[float] = []
        self.events = 0
        self.errors = 0
        self.stop = False

    def failed(self, error: BaseException) -> None:
        self.errors += 1
        if self.errors <= 3:
            print(f"session failed: {error!r}", file=sys.stderr)

    def audio(self, audio: bytes) -> None:
        if self.measuring:
            self.lags.append(time.perf_counter() - STAMP.unpack_from(audio)[0])


async def _mic(
    recorder: Recorder, send: Callable[[bytes], Awaitable[None]], offset: float
) -> None:
    """40 ms of audio every 40 ms (a late task catches up, as a buffered microphone does)."""
    due = time.perf_counter() + offset
    while not recorder.stop:
        now = time.perf_counter()
        if due > now:
            await asyncio.sleep(due - now)
        if recorder.measuring:
            recorder.mic_lags.append(time.perf_counter() - due)
        try:
            await send(MIC)
        except Exception:
            recorder.errors += 1
            return
        due += CHUNK_S


async def _sessions(
    n: int,
    session: Callable[[int, asyncio.Event], Awaitable[None]],
    recorder: Recorder,
    measure: Callable[[], Awaitable[dict[str, Any]]],
) -> dict[str, Any]:
    """Run ``session(index, ready)`` for N sessions, each in a task of its own; measure
    once every one has set ``ready``; then stop the microphones and wait for the ends."""
    opened = [asyncio.Event() for _ in range(n)]
    tasks = [asyncio.create_task(session(index, opened[index])) for index in range(n)]
    for ready in opened:
        await ready.wait()
    result = await measure()
    recorder.stop = True
    await asyncio.gather(*tasks, return_exceptions=True)
    return result


# ------------------------------------------------------------------ charivo


class LagEmitter:
    __slots__ = ("recorder",)

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def emit(self, name: str, payload: Any) -> None:
        recorder = self.recorder
        recorder.events += 1
        if name == "realtime:audio:delta":
            recorder.audio(payload.audio)
        elif name == "realtime:error":
            recorder.errors += 1


async def _noop_handler(args: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"success": True}


async def run_charivo(
    n: int, url: str, recorder: Recorder, measure: Callable[[], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    from charivo_fsm import RealtimeTool, RealtimeToolRegistration, create_realtime_manager
    from charivo_fsm.transports.openai import OpenAIRealtimeTransport

    tool = RealtimeToolRegistration(
        definition=RealtimeTool(
            name=TOOL_NAME, description="Do nothing.", parameters=NOOP_PARAMETERS
        ),
        handler=_noop_handler,
    )
    emitter = LagEmitter(recorder)
    gate = asyncio.Semaphore(CONNECT_BATCH)

    async def session(index: int, ready: asyncio.Event) -> None:
        # Each session lives in a task of its own, as an app serving one caller would.
        try:
            async with OpenAIRealtimeTransport(api_key=KEY, url=url) as transport:
                async with create_realtime_manager(transport, tools=[tool]) as manager:
                    manager.set_event_emitter(emitter)
                    async with gate:
                        await manager.start_session({"voice": "marin"})
                    ready.set()
                    await _mic(recorder, manager.send_audio_chunk, CHUNK_S * index / n)
                    manager.set_event_emitter(None)
        except Exception as error:
            recorder.failed(error)
        finally:
            ready.set()

    return await _sessions(n, session, recorder, measure)


# ------------------------------------------------------------------ floor


async def run_floor(
    n: int, url: str, recorder: Recorder, measure: Callable[[], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    import websockets

    update = json.dumps(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "audio": {"output": {"voice": "marin"}},
                "tools": [{"type": "function", "name": TOOL_NAME, "parameters": NOOP_PARAMETERS}],
            },
        }
    )

    async def reader(ws: Any) -> None:
        loads, b64decode, audio = json.loads, base64.b64decode, recorder.audio
        try:
            async for message in ws:
                event = loads(message)
                recorder.events += 1
                kind = event["type"]
                if kind == "response.output_audio.delta":
                    audio(b64decode(event["delta"]))
                elif kind == "response.done":
                    for item in event["response"]["output"]:
                        if item["type"] == "function_call":
                            output = {
                                "type": "conversation.item.create",
                                "item": {
                                    "type": "function_call_output",
                                    "call_id": item["call_id"],
                                    "output": json.dumps({"success": True}),
                                },
                            }
                            await ws.send(json.dumps(output))
                            await ws.send('{"type": "response.create"}')
                elif kind == "error":
                    recorder.errors += 1
        except websockets.ConnectionClosed:
            pass

    async def open_one() -> Any:
        ws = await websockets.connect(
            url, additional_headers={"Authorization": f"Bearer {KEY}"}, max_size=None
        )
        await ws.send(update)
        return ws

    sockets: list[Any] = []
    for start in range(0, n, CONNECT_BATCH):
        batch = min(CONNECT_BATCH, n - start)
        sockets += await asyncio.gather(*(open_one() for _ in range(batch)))
    readers = [asyncio.create_task(reader(ws)) for ws in sockets]

    def sender(ws: Any) -> Callable[[bytes], Awaitable[None]]:
        async def send(chunk: bytes) -> None:
            text = json.dumps(
                {"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()}
            )
            await ws.send(text)

        return send

    tasks = [
        asyncio.create_task(_mic(recorder, sender(ws), CHUNK_S * i / n))
        for i, ws in enumerate(sockets)
    ]
    result = await measure()
    recorder.stop = True
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    await asyncio.gather(*readers, return_exceptions=True)
    return result


# ------------------------------------------------------------------ peer


async def run_peer(
    n: int, url: str, recorder: Recorder, measure: Callable[[], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    from agents import function_tool, set_tracing_disabled
    from agents.realtime import RealtimeAgent, RealtimeRunner
    from agents.realtime.openai_realtime import OpenAIRealtimeWebSocketModel

    set_tracing_disabled(True)

    @function_tool(name_override=TOOL_NAME)
    def noop(n: int) -> str:
        """Do nothing."""
        return json.dumps({"success": True})

    agent = RealtimeAgent(name="bench", instructions="Answer.", tools=[noop])

    async def consume(session: Any) -> None:
        audio = recorder.audio
        async for event in session:
            recorder.events += 1
            kind = event.type
            if kind == "audio":
                audio(event.audio.data)
            elif kind == "error":
                recorder.errors += 1

    gate = asyncio.Semaphore(CONNECT_BATCH)

    async def session(index: int, ready: asyncio.Event) -> None:
        runner = RealtimeRunner(
            agent,
            model=OpenAIRealtimeWebSocketModel(),
            config={"model_settings": {"voice": "marin"}},
        )
        try:
            async with gate:
                realtime = await runner.run(model_config={"url": url, "api_key": KEY})
                await realtime.__aenter__()
            try:
                consumer = asyncio.create_task(consume(realtime))
                ready.set()
                await _mic(recorder, realtime.send_audio, CHUNK_S * index / n)
                consumer.cancel()
            finally:
                await realtime.__aexit__(None, None, None)
        except Exception as error:
            recorder.failed(error)
        finally:
            ready.set()

    return await _sessions(n, session, recorder, measure)


RUNNERS = {"charivo": run_charivo, "floor": run_floor, "peer": run_peer}


IMPORTS = {
    "charivo": ("charivo_fsm", "charivo_fsm.transports.openai"),
    "floor": ("websockets", "websockets.asyncio.client"),
    "peer": ("agents", "agents.realtime", "agents.realtime.openai_realtime"),
}


async def run(kind: str, n: int, url: str, warmup: float, seconds: float) -> dict[str, Any]:
    import importlib

    for module in IMPORTS[kind]:  # before the memory baseline
        importlib.import_module(module)
    recorder = Recorder()
    gc.collect()
    base_rss = _rss()
    opened_at = time.perf_counter()

    async def measure() -> dict[str, Any]:
        connected = time.perf_counter() - opened_at
        await asyncio.sleep(warmup)
        gc.collect()
        rss = _rss()
        recorder.measuring = True
        events_before = recorder.events
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        cpu, end = time.process_time() - cpu0, time.perf_counter()
        wall = end - wall0
        recorder.measuring = False
        lags = sorted(recorder.lags)
        mic = sorted(recorder.mic_lags)
        return {
            "kind": kind,
            "sessions": n,
            "connect_s": connected,
            "window": [wall0, end],
            "wall_s": wall,
            "cpu_s": cpu,
            "cpu_per_session_s": cpu / (n * wall),
            "busy": cpu / wall,
            "lag_p50_ms": _percentile(lags, 0.50) * 1000,
            "lag_p99_ms": _percentile(lags, 0.99) * 1000,
            "lag_max_ms": (lags[-1] if lags else float("nan")) * 1000,
            "audio_per_session_s": len(lags) / (n * wall),
            "events_per_session_s": (recorder.events - events_before) / (n * wall),
            "mic_lag_p99_ms": _percentile(mic, 0.99) * 1000,
            "mic_per_session_s": len(mic) / (n * wall),
            "rss_per_session_kb": (rss - base_rss) / n / 1024,
            "errors": recorder.errors,
        }

    return await RUNNERS[kind](n, url, recorder, measure)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.voice_client")
    parser.add_argument("--kind", choices=sorted(RUNNERS), required=True)
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--profile", help="write a cProfile of the run to this file")
    args = parser.parse_args()
    _raise_fd_limit()
    work = run(args.kind, args.sessions, args.url, args.warmup, args.seconds)
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        result = profiler.runcall(asyncio.run, work)
        profiler.dump_stats(args.profile)
    else:
        result = asyncio.run(work)
    print(json.dumps(result), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
