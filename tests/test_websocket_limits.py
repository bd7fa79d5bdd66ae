"""The WebSocket layer under a fragment flood (reliability, second round), on asyncio and
trio over real loopback sockets: a message split into too many frames fails the
connection instead of costing seconds of CPU, and the reader yields to the event loop
while it works through a burst of frames."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from wsproto.events import Ping, TextMessage

from charivo_fsm.transports._websocket import (
    MAX_FRAGMENTS,
    YIELD_EVERY,
    DroppedMessage,
    WebSocket,
    WebSocketClosed,
    client_handshake,
    server_handshake,
)

pytestmark = pytest.mark.anyio

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@pytest.fixture(params=["asyncio", "trio"], ids=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Real clocks for real socket I/O."""
    return (request.param, {})


@asynccontextmanager
async def pair(max_fragments: int = MAX_FRAGMENTS) -> AsyncIterator[tuple[WebSocket, WebSocket]]:
    """A connected (server, client) pair of WebSockets over loopback TCP."""
    listeners = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    listener = listeners.listeners[0]
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    accepted: list[WebSocket] = []
    with anyio.fail_after(20):
        async with listeners, anyio.create_task_group() as group:

            async def accept() -> None:
                stream = await listener.accept()
                result = await server_handshake(
                    stream, decide=lambda _request: None, max_message_size=1 << 24
                )
                assert result is not None
                accepted.append(result[0])

            group.start_soon(accept)
            stream = await anyio.connect_tcp("127.0.0.1", port)
            client = await client_handshake(
                stream, host="127.0.0.1", target="/", headers=[], max_message_size=1 << 24
            )
            client._max_fragments = max_fragments
            while not accepted:
                await anyio.sleep(0.001)
            yield accepted[0], client
            await client.abort()
            await accepted[0].abort()


def fragments(server: WebSocket, count: int, *, finish: bool = True) -> bytes:
    """The bytes of one text message split into ``count`` one-character frames."""
    data = b""
    for index in range(count):
        last = finish and index == count - 1
        data += server._ws.send(TextMessage(data="x", message_finished=last))
    return data


async def test_a_message_within_the_fragment_bound_is_reassembled() -> None:
    async with pair(max_fragments=500) as (server, client):
        await server._stream.send(fragments(server, 500))
        assert await client.receive() == "x" * 500


async def test_too_many_fragments_fail_the_connection() -> None:
    async with pair(max_fragments=500) as (server, client):
        await server._stream.send(fragments(server, 501))
        with pytest.raises(WebSocketClosed) as info:
            await client.receive()
        assert info.value.code == 1009
        assert not client.is_open


async def test_the_default_bound_stops_a_one_byte_frame_flood_early() -> None:
    async with pair() as (server, client):
        flood = fragments(server, MAX_FRAGMENTS + 10, finish=False)
        async with anyio.create_task_group() as group:
            group.start_soon(server._stream.send, flood)
            with pytest.raises(WebSocketClosed) as info:
                await client.receive()
        assert info.value.code == 1009


async def test_the_reader_yields_while_it_works_through_a_burst() -> None:
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    async with pair(max_fragments=4000) as (server, client):
        await server._stream.send(fragments(server, 4000))
        await anyio.sleep(0.05)  # everything has arrived: one read holds many frames
        async with anyio.create_task_group() as group:
            group.start_soon(ticker)
            await anyio.lowlevel.checkpoint()
            start = ticks
            assert await client.receive() == "x" * 4000
            done = True
        assert ticks - start >= 4000 // YIELD_EVERY // 2


# ---------------------------------------------------------------- the receive fast path
# ``WebSocket.receive`` decodes whole unmasked text frames itself and hands every other
# frame to wsproto; these check the seams between the two.


def text_frame(payload: bytes, *, first: int = 0x81) -> bytes:
    """An unmasked server frame (``first``: FIN, reserved bits and opcode)."""
    size = len(payload)
    if size < 126:
        return bytes((first, size)) + payload
    if size < 65536:
        return bytes((first, 126)) + size.to_bytes(2, "big") + payload
    return bytes((first, 127)) + size.to_bytes(8, "big") + payload


async def test_frames_split_across_reads_arrive_whole_and_in_order() -> None:
    async with pair() as (server, client):
        ping = server._ws.send(Ping(payload=b"hi"))
        data = (
            text_frame(b"one")
            + ping
            + fragments(server, 3)
            + text_frame("ünïcödé".encode())
            + text_frame(b"x" * 70_000)
        )
        async with anyio.create_task_group() as group:

            async def trickle() -> None:
                for start in range(0, len(data), 7):
                    await server._stream.send(data[start : start + 7])
                    if start < 200:
                        await anyio.sleep(0)

            group.start_soon(trickle)
            received = [await client.receive() for _ in range(4)]
        assert received == ["one", "xxx", "ünïcödé", "x" * 70_000]


async def test_invalid_utf8_in_a_text_frame_fails_the_connection_with_1007() -> None:
    async with pair() as (server, client):
        await server._stream.send(text_frame(b"ok") + text_frame(b"\xff\xfe"))
        assert await client.receive() == "ok"
        with pytest.raises(WebSocketClosed) as info:
            await client.receive()
        assert info.value.code == 1007


async def test_a_frame_above_the_fast_limit_streams_through_the_size_bound() -> None:
    async with pair() as (server, client):
        client._max = client._fast_limit = 1000
        await server._stream.send(text_frame(b"y" * 5000) + text_frame(b"after"))
        dropped = await client.receive()
        assert isinstance(dropped, DroppedMessage) and dropped.reason == "oversized"
        assert await client.receive() == "after"


async def test_frames_that_come_with_the_101_are_the_first_messages() -> None:
    listeners = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    listener = listeners.listeners[0]
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    with anyio.fail_after(20):
        async with listeners, anyio.create_task_group() as group:

            async def answer() -> None:
                stream = await listener.accept()
                request = b""
                while b"\r\n\r\n" not in request:
                    request += await stream.receive()
                key = next(
                    line.split(b":", 1)[1].strip()
                    for line in request.split(b"\r\n")
                    if line.lower().startswith(b"sec-websocket-key:")
                )
                accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
                head = (
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                )
                # the head, a whole frame and half of the next, in one write
                second = text_frame(b"second")
                await stream.send(head + text_frame(b"first") + second[:4])
                await anyio.sleep(0.05)
                await stream.send(second[4:])
                await anyio.sleep(1)

            group.start_soon(answer)
            stream = await anyio.connect_tcp("127.0.0.1", port)
            client = await client_handshake(
                stream, host="127.0.0.1", target="/", headers=[], max_message_size=1 << 20
            )
            assert await client.receive() == "first"
            assert await client.receive() == "second"
            await client.abort()
            group.cancel_scope.cancel()
