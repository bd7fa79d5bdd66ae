"""What the demo says and uses (the character, the tools, the messages, the local
server's script), and :class:`Demo`, everything the steps share."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Final

import anyio
import attrs

from ..avatar import AvatarCatalog
from ..manager import RealtimeManager
from ..model import Character, CharacterVoice, RealtimeTool
from ..testing.server import LocalRealtimeServer, ToolTrigger
from ..transports.openai import OpenAIRealtimeTransport
from .narration import LogCollector, Narrator, Timeline, expect

__all__ = [
    "CATALOG",
    "CHARACTER",
    "DEMO_API_KEY",
    "GREETING",
    "LOCAL_TRIGGERS",
    "MEMORY_QUESTION",
    "SMILE_REQUEST",
    "STILL_THERE",
    "STORY",
    "STORY_REQUEST",
    "TONE_RULE",
    "TRANSCRIPTION_MODEL",
    "VOICE_REPLY",
    "VOICE_REQUEST",
    "WAV_NAME",
    "WEATHER_QUESTION",
    "WEATHER_TOOL",
    "Demo",
    "ServerJournal",
    "local_reply",
]

DEMO_API_KEY: Final = "sk-charivo-demo-local-key"
"""The key the embedded server requires and the demo's transport presents."""

TRANSCRIPTION_MODEL: Final = "gpt-4o-mini-transcribe"
WAV_NAME: Final = "hiyori-voice.wav"

CHARACTER: Final = Character(
    id="hiyori",
    name="Hiyori",
    description="A cheerful guide who lives in a small seaside town.",
    personality="curious, warm, brief",
    voice=CharacterVoice(voice_id="marin"),
)
CATALOG: Final = AvatarCatalog(
    expressions=("neutral", "happy", "surprised"), motions={"idle": 2, "greet": 1}
)
GREETING: Final = "Hi Hiyori! Who are you?"
VOICE_REQUEST: Final = "Say a few words for my recording, please."
VOICE_REPLY: Final = "Hello from the seaside! The waves are calm and the gulls are singing."
WEATHER_QUESTION: Final = "What's the weather like in Lisbon today?"
SMILE_REQUEST: Final = "Please smile for me!"
STILL_THERE: Final = "Are you still there?"
MEMORY_QUESTION: Final = "What did I say first?"
STORY_REQUEST: Final = "Tell me a long story about the sea."
TONE_RULE: Final = "- Speak in a warm, friendly tone."
STORY: Final = (
    "Once upon a time a little lighthouse stood at the edge of a grey sea. Every night"
    " it sent its beam across the waves, and every morning the fishing boats came home"
    " safe. One winter a storm put out its light, and the keeper's daughter climbed the"
    " stairs with a lantern to guide the last boat in."
)
WEATHER_TOOL: Final = RealtimeTool(
    name="getWeather",
    description="Get today's weather forecast for a city.",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city name."}},
        "required": ["city"],
    },
)
LOCAL_TRIGGERS: Final = (
    ToolTrigger("weather", "getWeather", {"city": "Lisbon"}),
    ToolTrigger("smile", "setExpression", {"expressionId": "happy"}),
)


def local_reply(text: str) -> str:
    """The embedded server's answer to a user message (or to a heard audio turn)."""
    if "story" in text.lower():
        return STORY
    if "recording" in text.lower():
        return VOICE_REPLY
    return f"Hello! I am Hiyori, your guide by the sea. You said: {text}"


class _Recorded(list[dict[str, Any]]):
    """A server record (``received`` or ``sent``) that also notes each event, in
    arrival order, in the journal shared by both."""

    def __init__(
        self, side: str, order: list[tuple[str, dict[str, Any]]], items: list[dict[str, Any]]
    ) -> None:
        super().__init__(items)
        self._side = side
        self._order = order

    def append(self, event: dict[str, Any]) -> None:
        super().append(event)
        self._order.append((self._side, event))


class ServerJournal:
    """The local server's record of both directions in one order.

    :attr:`LocalRealtimeServer.received` (client events) and
    :attr:`~LocalRealtimeServer.sent` (server events) are two lists; the
    journal replaces them with lists that also append each event to
    :attr:`order` as ``("client" | "server", event)``, so a step can show
    which client message came before or after which server event.
    """

    def __init__(self, server: LocalRealtimeServer) -> None:
        self.order: list[tuple[str, dict[str, Any]]] = []
        server.received = _Recorded("client", self.order, server.received)
        server.sent = _Recorded("server", self.order, server.sent)

    def mark(self) -> int:
        return len(self.order)

    def since(self, mark: int) -> list[tuple[str, dict[str, Any]]]:
        return self.order[mark:]


@attrs.define
class Demo:
    """Everything the steps share; ``server`` and ``journal`` are None in live mode."""

    live: bool
    server: LocalRealtimeServer | None
    journal: ServerJournal | None
    timeline: Timeline
    narrator: Narrator
    logs: LogCollector
    transport: OpenAIRealtimeTransport
    manager: RealtimeManager
    instructions: str
    timeout: float
    quiet: float
    out_dir: Path | None = None
    weather_calls: list[str] = attrs.field(factory=list)
    session_id: str | None = None
    wav_path: Path | None = None

    def say(self, kind: str, text: str) -> None:
        self.timeline.line(kind, text)

    def ok(self, text: str) -> None:
        self.timeline.line("check", f"ok: {text}")

    def output_dir(self) -> Path:
        """``--out DIR`` (created if needed), else a new temporary directory."""
        if self.out_dir is None:
            self.out_dir = Path(tempfile.mkdtemp(prefix="charivo-demo-"))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return self.out_dir

    async def settle(self) -> None:
        """Live only: let the model finish whatever it is doing before the next step."""
        if self.quiet <= 0:
            return
        with anyio.move_on_after(self.timeout):
            while True:
                count = len(self.narrator.events)
                await anyio.sleep(self.quiet)
                responding = str(self.manager.state.response.status) == "responding"
                if len(self.narrator.events) == count and not responding:
                    return

    async def answer(self, text: str, what: str) -> str:
        """Send a user message; return the first non-empty final answer after it."""
        mark = self.narrator.mark()
        self.say("user", f"send_message({text!r})")
        await self.manager.send_message(text)
        done = await self.narrator.wait_for(
            "realtime:assistant:done", after=mark, what=what, where=lambda p: bool(p.text)
        )
        final: str = done.text
        return final

    def check_no_errors(self, mark: int) -> None:
        errors = self.narrator.since(mark, "realtime:error")
        expect(
            not errors,
            f"realtime:error during the step: {errors[0].error.message}" if errors else "",
        )
