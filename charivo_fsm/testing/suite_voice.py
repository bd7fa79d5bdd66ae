"""Invariants of the voice rules (CONTRACT §11) and of the transport's own rules.

The engine tracks the assistant audio items it receives and where playback
stands (``mark_played`` reports, or real-time playback from an item's first
chunk); ``interrupt()`` and barge-in cut the item being played and truncate it
at its played position, only when some of its audio was not played, never past
the audio received.  The suite keeps its own small model of those items, from
the chunks delivered, the reports made and the cuts asked for, and compares
every ``truncate_audio`` call with it.

Rules that only the provider's side can see (one response request at a time,
the conversation replayed on reconnect) are checked by the transport's
:class:`~charivo_fsm.testing.suite_faults.TransportRules`, when it has them.
"""

from __future__ import annotations

from collections.abc import Generator

import attrs

from ..events import AssistantResponseStarted, AudioOutputDelta, UserSpeechStarted
from ..model import ConnectionState, ResponseStatus
from .suite_base import (
    _ACTIVE,
    _OVER,
    SENDS,
    Broken,
    CallEntered,
    Checkpoint,
    Command,
    CommandIssued,
    CommandReturned,
    Context,
    Delivered,
    Delivering,
    Emitted,
    Exited,
    Observation,
    TransportCall,
    _invariant,
)
from .suite_faults import TransportRules

_BYTES_PER_MS = 48  # the suite's sessions use the default output format, PCM16 24 kHz


@attrs.define(slots=True)
class _Item:
    first_at: float
    received: int = 0  # bytes
    reported: int | None = None  # ms, the app's last accepted report


class _AudioModel:
    """The assistant audio of the running session, as the suite sees it.

    Fed every observation (:meth:`observe`): the chunks delivered (and whether
    the engine passed each to the app), the app's reports, the cuts
    (``interrupt()`` accepted, barge-in) and what forgets the items (a lost
    link, the end of the session).  A chunk the engine drops must be audio that
    was already on its way when its item was cut: a chunk of an item cut in this
    session, or one without an item id while the cut still mutes the audio
    (until the next response or another item); :attr:`problem` says when not.
    """

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.items: dict[str, _Item] = {}
        self.current: str | None = None  # the item being played (its latest chunk)
        self.playing = False  # between tts:audio:start and tts:audio:end
        self.muted = False  # a cut happened: audio without an item id may drop
        self.cut_items: set[str] = set()  # items cut in this session: late audio may drop
        self.owed: list[tuple[str, int, str]] = []  # truncations: item, position, why
        self.problem: str | None = None
        self._chunk: AudioOutputDelta | None = None  # being delivered
        self._chunk_at = 0.0
        self.deltas: list[object] = []  # what the chunk being delivered emitted

    def observe(self, seen: Observation) -> None:
        kind = type(seen)
        if kind is Emitted:
            assert isinstance(seen, Emitted)
            name = seen.name
            if name == "tts:audio:start":
                self.playing = True
            elif name == "tts:audio:end":
                self.playing = False
            elif name == "realtime:audio:delta":
                self.deltas.append(seen.payload)
            elif name == "realtime:reconnect:attempt" and seen.payload.attempt == 1:
                self.forget()  # a lost link forgets the items
            elif name == "realtime:state" and seen.payload.state.session.status in _OVER:
                self.forget()
        elif kind is Delivering:
            assert isinstance(seen, Delivering)
            event = seen.event
            if seen.state.session.status in _OVER:
                return
            if type(event) is AudioOutputDelta:
                self._chunk, self._chunk_at, self.deltas = event, seen.at, []
            elif type(event) is UserSpeechStarted:
                reconnecting = seen.state.session.status == _ACTIVE and (
                    seen.state.connection == ConnectionState.CONNECTING
                )
                self.cut(seen.at, "barge-in", reconnecting)
            elif type(event) is AssistantResponseStarted:
                self.muted = False
        elif kind is Delivered:
            assert isinstance(seen, Delivered)
            chunk = self._chunk
            if chunk is None or seen.event is not chunk:
                return
            self._chunk = None
            if self.deltas:
                self.chunk(chunk.item_id, len(chunk.audio), self._chunk_at)
            elif not (chunk.item_id in self.cut_items if chunk.item_id is not None else self.muted):
                self.problem = (
                    f"an audio chunk of item {chunk.item_id!r} was dropped, but that item "
                    "was not cut" + (" (and nothing is muted)" if chunk.item_id is None else "")
                )
        elif kind is CommandReturned:
            assert isinstance(seen, CommandReturned)
            command = seen.command
            if command.kind == "interrupt" and command.error is None:
                assert command.returned_at is not None
                self.cut(command.returned_at, "interrupt()")
            elif command.kind == "mark_played":
                item_id, played_ms = command.args
                known = command.before.session.status not in _OVER and item_id in self.items
                if known and command.error is not None:
                    self.problem = f"mark_played({item_id!r}) of an item received was refused"
                elif not known and command.error is None:
                    self.problem = f"mark_played({item_id!r}) of an unknown item was accepted"
                elif known:
                    self.items[item_id].reported = played_ms

    def chunk(self, item_id: str | None, size: int, at: float) -> None:
        self.muted = False
        if item_id is None:
            self.current = None
            return
        item = self.items.get(item_id)
        if item is None:
            item = self.items[item_id] = _Item(at)
        item.received += size
        self.current = item_id

    def received_ms(self, item_id: str) -> int:
        return self.items[item_id].received // _BYTES_PER_MS

    def played_ms(self, item_id: str, now: float) -> int:
        item = self.items[item_id]
        if item.reported is not None:
            played = item.reported
        else:
            played = round((now - item.first_at) * 1000.0)
        return max(0, min(played, self.received_ms(item_id)))

    def cut(self, now: float, why: str, reconnecting: bool = False) -> None:
        """Cut what is playing (or its tail): the current item is truncated at its
        played position when some of it was not played (voice transports).  A cut
        that truncates nothing while the link is lost forgets every item."""
        current = self.current
        if not (self.playing or current is not None):
            return  # nothing to cut
        self.current, self.muted = None, True
        if current is not None:
            self.cut_items.add(current)
        played = self.played_ms(current, now) if current is not None else 0
        if current is not None and played < self.received_ms(current):
            if self.ctx.voice:
                self.owed.append((current, played, why))
        elif reconnecting:
            self.items.clear()
            self.cut_items.clear()

    def forget(self) -> None:
        self.items.clear()
        self.cut_items.clear()
        self.current, self.muted = None, False
        self.owed.clear()


@_invariant(
    "voice",
    "each audio chunk delivered while a session runs reaches the app at most once, "
    "byte for byte with its item id, and exactly once unless it belongs to an item "
    "cut in this session (audio already on its way); tts:audio:start and tts:audio:end "
    "alternate, and no audio is playing once the session is over",
)
def audio_reaches_the_app(ctx: Context) -> Generator[None, Observation, None]:
    model = _AudioModel(ctx)
    chunk: AudioOutputDelta | None = None
    while True:
        seen = yield
        kind = type(seen)
        if kind is Emitted:
            assert isinstance(seen, Emitted)
            name = seen.name
            if name == "tts:audio:start" and model.playing:
                raise Broken("tts:audio:start while audio is playing")
            if name == "tts:audio:end" and not model.playing:
                raise Broken("tts:audio:end while no audio is playing")
            if name == "realtime:audio:delta":
                if chunk is None:
                    raise Broken("realtime:audio:delta with no audio chunk being delivered")
                payload = seen.payload
                if payload.audio != chunk.audio or payload.item_id != chunk.item_id:
                    raise Broken("realtime:audio:delta is not the chunk delivered")
                if not model.playing:
                    raise Broken("realtime:audio:delta before tts:audio:start")
            elif name == "realtime:state":
                if model.playing and seen.payload.state.session.status in _OVER:
                    raise Broken("the session is over and audio is still playing")
        elif kind is Delivering:
            assert isinstance(seen, Delivering)
            if type(seen.event) is AudioOutputDelta and seen.state.session.status not in _OVER:
                chunk = seen.event
        elif kind is Delivered:
            assert isinstance(seen, Delivered)
            if chunk is not None and seen.event is chunk:
                chunk = None
                if len(model.deltas) > 1:
                    raise Broken(f"an audio chunk reached the app {len(model.deltas)} times")
        model.observe(seen)
        if model.problem is not None:
            raise Broken(model.problem)


@_invariant(
    "voice",
    "every truncate_audio(item, ms) is asked for by a cut (interrupt() accepted, or "
    "barge-in) of the item being played, received in this session, at its played "
    "position (the app's last mark_played, else real-time playback since its first "
    "chunk) with 0 <= ms < the audio received: only unplayed audio is cut, never "
    "past what arrived; a cut of an item with unplayed audio truncates it exactly "
    "once (voice transports); mark_played is accepted exactly for items received in "
    "the running session",
)
def truncation_cuts_only_unplayed_audio(ctx: Context) -> Generator[None, Observation, None]:
    model = _AudioModel(ctx)
    while True:
        seen = yield
        model.observe(seen)
        if model.problem is not None:
            raise Broken(model.problem)
        kind = type(seen)
        if kind is CallEntered:
            assert isinstance(seen, CallEntered)
            call = seen.call
            if call.method != "truncate_audio":
                continue
            item_id, end_ms = call.args
            for index, (owed_item, position, _why) in enumerate(model.owed):
                if owed_item == item_id and abs(end_ms - position) <= 1:
                    del model.owed[index]
                    break
            else:
                raise Broken(_unasked(model, call, item_id, end_ms))
        elif kind is Checkpoint or kind is Exited:
            if model.owed:
                item_id, position, why = model.owed[0]
                raise Broken(
                    f"{why} cut item {item_id!r} with unplayed audio but it was not "
                    f"truncated (at {position} ms)"
                )


def _unasked(model: _AudioModel, call: TransportCall, item_id: str, end_ms: int) -> str:
    """Why a truncate_audio call was not one the suite expected."""
    what = f"truncate_audio({item_id!r}, {end_ms})"
    if item_id not in model.items:
        return f"{what}: an item not received in this session"
    received = model.received_ms(item_id)
    if end_ms >= received:
        return f"{what}: {received} ms were received, so nothing after {end_ms} ms is unplayed"
    played = model.played_ms(item_id, call.entered_at)
    return f"{what}: no cut asked for it (played position {played} ms of {received} ms)"


@_invariant(
    "voice",
    "barge-in (user speech started while a session runs) and interrupt() accepted "
    "by the transport end the audio that is playing; interrupt() leaves no response "
    "responding",
)
def barge_in_ends_the_audio(ctx: Context) -> Generator[None, Observation, None]:
    playing = False
    speech: UserSpeechStarted | None = None
    ended = False
    while True:
        seen = yield
        kind = type(seen)
        if kind is Emitted:
            assert isinstance(seen, Emitted)
            if seen.name == "tts:audio:start":
                playing = True
            elif seen.name == "tts:audio:end":
                playing, ended = False, True
        elif kind is Delivering:
            assert isinstance(seen, Delivering)
            if type(seen.event) is UserSpeechStarted and seen.state.session.status not in _OVER:
                speech, ended = seen.event, not playing
        elif kind is Delivered:
            assert isinstance(seen, Delivered)
            if speech is not None and seen.event is speech:
                speech = None
                if not ended:
                    raise Broken("barge-in left the audio playing (no tts:audio:end)")
        elif kind is CommandIssued:
            assert isinstance(seen, CommandIssued)
            if seen.command.kind == "interrupt":
                ended = False
        elif kind is CommandReturned:
            assert isinstance(seen, CommandReturned)
            command = seen.command
            if command.kind != "interrupt" or command.error is not None:
                continue
            if playing:
                raise Broken("interrupt() left the audio playing")
            if ctx.manager.state.response.status == ResponseStatus.RESPONDING:
                raise Broken("interrupt() left the response responding")


# The manager command that asks for each send method of the transport.
_ASKED_BY = {
    "send_text": "send_message",
    "send_audio": "send_audio_chunk",
    "interrupt": "interrupt",
    "commit_audio": "commit_audio",
    "clear_audio": "clear_audio",
}


@_invariant(
    "D14, voice",
    "each send command that passes the guards makes exactly one call of its "
    "transport method (no retry, no second response request), and the engine "
    "never calls a send method on its own",
)
def one_transport_call_per_send(ctx: Context) -> Generator[None, Observation, None]:
    waiting: dict[str, list[Command]] = {}  # command kind -> issued, no call yet
    called: set[int] = set()  # commands whose call was made
    while True:
        seen = yield
        kind = type(seen)
        if kind is CommandIssued:
            assert isinstance(seen, CommandIssued)
            command = seen.command
            if command.kind in _ASKED_BY.values():
                waiting.setdefault(command.kind, []).append(command)
        elif kind is CallEntered:
            assert isinstance(seen, CallEntered)
            method = seen.call.method
            if method not in SENDS:
                continue
            asked = waiting.get(_ASKED_BY[method])
            if not asked:
                raise Broken(f"{method} called with no {_ASKED_BY[method]}() waiting for it")
            called.add(asked.pop(0).seq)
        elif kind is CommandReturned:
            assert isinstance(seen, CommandReturned)
            command = seen.command
            if command.kind not in _ASKED_BY.values():
                continue
            asked = waiting.get(command.kind, [])
            if command in asked:
                asked.remove(command)
                if command.error is None:
                    raise Broken(f"{command.kind}() returned without calling the transport")
            elif command.seq not in called:  # pragma: no cover - bookkeeping
                raise Broken(f"{command.kind}() lost track of its call")


@_invariant(
    "transport",
    "the transport's own rules hold on the provider's side (for transports that "
    "implement TransportRules: the OpenAI transport against the local server checks "
    "one response request at a time and the conversation replayed on reconnect)",
)
def transport_rules_hold(ctx: Context) -> Generator[None, Observation, None]:
    while True:
        seen = yield
        kind = type(seen)
        if kind is not Checkpoint and kind is not Exited:
            continue
        rules = ctx.faults
        if not isinstance(rules, TransportRules):
            continue
        broken = rules.broken_rules(final=kind is Exited)
        if broken:
            raise Broken("; ".join(broken))
