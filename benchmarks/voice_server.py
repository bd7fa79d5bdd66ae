"""Workload g's server: the local realtime service's rules streaming a scripted voice
turn loop at real-time pace, in a process of its own.

``python -m benchmarks.voice_server [--port P]`` prints ``listening <port>`` and
then, once a second, one ``tick`` line (see :func:`_ticker`) until stdin closes or
SIGTERM/SIGINT arrives.

What the stream is made of
--------------------------
Every event comes from the local server's socket-free rules
(:class:`~charivo_fsm.testing.service_rules.ServiceSession` and
:class:`~charivo_fsm.testing.service_response.ResponseRun`): ``session.created``,
``session.updated``, the user's items, responses with their items, content parts,
transcript deltas (one per word), 40 ms audio deltas of the synthetic voice, tool
calls, ``response.done`` and ``rate_limits.updated`` -- the same GA events
:class:`~charivo_fsm.testing.LocalRealtimeServer` sends (valid for the ``openai``
SDK's models, which the ``openai-agents`` peer checks every event against).

What differs from :class:`~charivo_fsm.testing.LocalRealtimeServer` is the I/O and
what drives the turns, so that one core can feed hundreds of sessions in real time:

* a bare asyncio protocol with its own WebSocket framing (server frames are not
  masked, so a frame is a header and the JSON text) instead of wsproto over anyio;
  nothing is recorded;
* the turns are scripted by time instead of by voice activity detection of the
  microphone audio (which the server receives, counts and otherwise ignores): every
  :data:`TURN_PERIOD` seconds the user "speaks" for :data:`USER_SPEECH` s
  (``input_audio_buffer.speech_started`` / ``speech_stopped`` / ``committed`` and the
  user's message item), then the server answers; every :data:`TOOL_EVERY`-th turn
  the answer is a call of the client's no-op tool ``noop``, and the spoken answer
  follows the client's ``function_call_output`` and ``response.create``;
* each ``response.output_audio.delta`` carries its send time: the first 9 bytes of
  the PCM16 chunk are a little-endian float64 ``time.perf_counter()`` (the system's
  monotonic clock, the same in every process of the machine) and a zero byte,
  written just before the frame is handed to the socket.  The event stays valid
  (the audio is still 40 ms of PCM16, with 4½ samples of noise); a client reads the
  stamp back from the decoded audio to measure the lag.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import random
import resource
import signal
import struct
import sys
import time
from typing import Any

from charivo_fsm.testing.service_response import ResponseRun, event, new_id
from charivo_fsm.testing.service_rules import Script, ServiceSession, ToolTrigger

TURN_PERIOD = 6.5
"""Seconds from one user turn to the next (a turn waits while a response runs)."""
USER_SPEECH = 1.0
"""Seconds the user speaks at the start of each turn."""
TOOL_EVERY = 3
"""Every third turn the model first calls the ``noop`` tool."""
TOOL_NAME = "noop"
REPLY = (
    "Sure, here is what I found for you: the next train to the city leaves at nine "
    "in the morning from platform four, it takes about two hours, and there is a "
    "cafe on board, so you can have breakfast on the way. Anything else?"
)
"""The assistant's spoken answer to every user turn (36 words, about 4.7 s of audio)."""
STAMP = struct.Struct("<d")
"""The send time at the start of each audio chunk (then one zero byte: 9 bytes,
12 base64 characters)."""
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def read_stamp(audio: bytes) -> float:
    """The send time stamped into an audio chunk by this server."""
    return STAMP.unpack_from(audio)[0]


def _frame(payload: bytes, opcode: int = 0x1) -> bytes:
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, size))
    elif size < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, size)
    return head + payload


def _unmask(payload: bytes, key: bytes) -> bytes:
    size = len(payload)
    mask = int.from_bytes((key * (size // 4 + 1))[:size], "little")
    return (int.from_bytes(payload, "little") ^ mask).to_bytes(size, "little")


class Stats:
    def __init__(self) -> None:
        self.connections = 0
        self.sent = 0
        self.audio = 0
        self.mic = 0
        self.other_in = 0
        self.late_max = 0.0  # how late an audio chunk went out against its schedule


STATS = Stats()


class Connection(asyncio.Protocol):
    """One client connection: the handshake, framing and the scripted session."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.open = False
        self.closed = False
        self.fragments: list[bytes] = []
        self.service = ServiceSession(script)
        self.configured = asyncio.Event()
        self.awaiting_tool = False
        self.streaming: ResponseRun | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for task in self.tasks:
            task.cancel()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.open:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            del self.buffer[: end + 4]
            self._handshake(head)
            if not self.open:
                return
        self._frames()

    def _handshake(self, head: str) -> None:
        assert self.transport is not None
        headers = {}
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        key = headers.get("sec-websocket-key")
        if not key or not headers.get("authorization", "").startswith("Bearer "):
            self.transport.write(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n")
            self.transport.close()
            return
        accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
        self.transport.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode()
        )
        self.open = True
        STATS.connections += 1
        self.send(self.service.opening())
        self._spawn(self._turns())

    def _frames(self) -> None:
        buffer = self.buffer
        while len(buffer) >= 2:
            first, second = buffer[0], buffer[1]
            size = second & 0x7F
            at = 2
            if size == 126:
                if len(buffer) < 4:
                    return
                size = int.from_bytes(buffer[2:4], "big")
                at = 4
            elif size == 127:
                if len(buffer) < 10:
                    return
                size = int.from_bytes(buffer[2:10], "big")
                at = 10
            masked = second & 0x80
            end = at + (4 if masked else 0) + size
            if len(buffer) < end:
                return
            payload = bytes(buffer[at + 4 : end]) if masked else bytes(buffer[at:end])
            if masked:
                payload = _unmask(payload, bytes(buffer[at : at + 4]))
            del buffer[:end]
            opcode = first & 0x0F
            if opcode in (0x0, 0x1, 0x2):
                self.fragments.append(payload)
                if first & 0x80:
                    message = b"".join(self.fragments)
                    self.fragments.clear()
                    self._message(message)
            elif opcode == 0x8:
                self._write(_frame(payload[:2], 0x8))
                assert self.transport is not None
                self.transport.close()
                return
            elif opcode == 0x9:
                self._write(_frame(payload, 0xA))

    def _write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def send(self, events: list[dict[str, Any]]) -> None:
        if not events or self.closed:
            return
        frames = []
        for item in events:
            if item["type"] == "response.output_audio.delta":
                stamp = base64.b64encode(STAMP.pack(time.perf_counter()) + b"\0").decode()
                item["delta"] = stamp + item["delta"][12:]
                STATS.audio += 1
            frames.append(_frame(json.dumps(item).encode()))
        STATS.sent += len(frames)
        self._write(b"".join(frames))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # ------------------------------------------------------------ the session

    def _message(self, data: bytes) -> None:
        if b"input_audio_buffer.append" in data[:64]:
            STATS.mic += 1  # the microphone: counted, not analysed
            return
        STATS.other_in += 1
        try:
            client_event = json.loads(data)
        except ValueError:
            return
        kind = client_event.get("type")
        if kind == "input_audio_buffer.append":
            STATS.mic += 1
            return
        self.send(self.service.handle(client_event))
        if kind == "session.update":
            self.configured.set()
        elif kind == "response.create":
            self.awaiting_tool = False
        self._follow()

    def _follow(self) -> None:
        run = self.service.response
        if run is not None and run is not self.streaming:
            self.streaming = run
            self._spawn(self._stream(run))

    async def _stream(self, run: ResponseRun) -> None:
        loop = asyncio.get_running_loop()
        due: float | None = None
        while not self.closed:
            events, pause = run.step()
            self.send(events)
            if pause is None:
                break
            if pause.kind != "audio":
                continue
            now = loop.time()
            if due is None:
                due = now
            elif now > due:
                STATS.late_max = max(STATS.late_max, now - due)
            if due > now:
                await asyncio.sleep(due - now)
            due += pause.ms / 1000
        if self.streaming is run:
            self.streaming = None
        if run.plan.tool is not None:
            self.awaiting_tool = True

    async def _turns(self) -> None:
        await self.configured.wait()
        loop = asyncio.get_running_loop()
        turn = 0
        start = loop.time() + random.uniform(0.0, TURN_PERIOD)
        while not self.closed:
            await asyncio.sleep(max(0.0, start - loop.time()))
            waited = 0.0
            while self.service.response is not None or (self.awaiting_tool and waited < 5.0):
                await asyncio.sleep(0.05)
                waited += 0.05
            self.awaiting_tool = False
            turn += 1
            item_id = new_id("item")
            started = event("input_audio_buffer.speech_started", audio_start_ms=0, item_id=item_id)
            self.send([started])
            await asyncio.sleep(USER_SPEECH)
            if self.closed:
                return
            text = f"turn {turn}: " + ("lookup please" if turn % TOOL_EVERY == 0 else "hello there")
            previous = self.service.items[-1]["id"] if self.service.items else None
            user_item = {
                "id": item_id,
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": text}],
            }
            stopped = event(
                "input_audio_buffer.speech_stopped",
                audio_end_ms=int(USER_SPEECH * 1000),
                item_id=item_id,
            )
            committed = event(
                "input_audio_buffer.committed", item_id=item_id, previous_item_id=previous
            )
            added = self.service.handle({"type": "conversation.item.create", "item": user_item})
            self.send([stopped, committed, *added])
            if self.service.response is None:
                self.send(self.service.handle({"type": "response.create"}))
                self._follow()
            start += TURN_PERIOD


async def _ticker() -> None:
    """One line a second: ``tick <perf_counter> <CPU seconds since the last tick>
    <connections> <events sent> <audio deltas> <mic messages> <latest audio chunk's
    lateness in ms>`` (counts since the last tick)."""
    last_cpu = time.process_time()
    while True:
        await asyncio.sleep(1.0)
        cpu = time.process_time()
        print(
            f"tick {time.perf_counter():.3f} {cpu - last_cpu:.4f} {STATS.connections} "
            f"{STATS.sent} {STATS.audio} {STATS.mic} {STATS.late_max * 1000:.1f}",
            flush=True,
        )
        last_cpu = cpu
        STATS.sent = STATS.audio = STATS.mic = 0
        STATS.late_max = 0.0


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def make_script() -> Script:
    return Script(
        tool_triggers=(ToolTrigger("lookup", TOOL_NAME, {"n": 1}),),
        reply=lambda _text: REPLY,
        audio=True,
    )


async def serve(port: int) -> None:
    _raise_fd_limit()
    loop = asyncio.get_running_loop()
    script = make_script()
    server = await loop.create_server(
        lambda: Connection(script), "127.0.0.1", port, backlog=4096, reuse_address=True
    )
    actual = server.sockets[0].getsockname()[1]
    print(f"listening {actual}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not os.read(0, 4096) else None)
    ticker = loop.create_task(_ticker())
    await stop.wait()
    ticker.cancel()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.voice_server")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
