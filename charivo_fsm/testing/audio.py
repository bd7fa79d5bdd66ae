"""Audio for the local realtime server and its tests: formats, levels, signals.

Everything here is pure Python (no NumPy) and deterministic:

* :class:`AudioFormat` — the three formats of the GA Realtime interface
  (``audio/pcm`` PCM16 mono little-endian 24 kHz, ``audio/pcmu`` G.711 µ-law
  8 kHz, ``audio/pcma`` G.711 A-law 8 kHz), built from a session's
  ``audio.*.format`` object with :meth:`AudioFormat.from_session`;
* :func:`frame_levels` — the RMS level (0..1 of full scale) of each 20 ms
  frame, as the server's voice activity detection uses it;
* :func:`speech` / :func:`silence` — input audio for tests: a voiced,
  speech-like signal well above the default detection level, and digital
  silence, in any of the formats;
* :func:`voice_chunks` — the synthetic voice the server answers with: one word
  of 40 ms chunks, a few harmonics under a syllable envelope, cached.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Literal

import attrs

__all__ = [
    "CHUNK_MS",
    "FRAME_MS",
    "AudioFormat",
    "alaw_decode",
    "alaw_encode",
    "frame_levels",
    "silence",
    "speech",
    "ulaw_decode",
    "ulaw_encode",
    "voice_chunks",
    "word_chunk_count",
]

FRAME_MS = 20
"""The frame length the voice activity detection measures, in milliseconds."""

CHUNK_MS = 40
"""The length of one ``response.output_audio.delta`` chunk, in milliseconds."""

FormatType = Literal["audio/pcm", "audio/pcmu", "audio/pcma"]


@attrs.frozen(slots=True)
class AudioFormat:
    """One audio format of the GA interface: its wire ``type`` and sample rate.

    PCM16 has two bytes per sample; both G.711 variants have one."""

    type: FormatType = "audio/pcm"

    @property
    def rate(self) -> int:
        """Samples per second: 24,000 for PCM16, 8,000 for G.711."""
        return 24_000 if self.type == "audio/pcm" else 8_000

    @property
    def sample_width(self) -> int:
        """Bytes per sample: 2 for PCM16, 1 for G.711."""
        return 2 if self.type == "audio/pcm" else 1

    @property
    def bytes_per_ms(self) -> int:
        """Bytes of audio per millisecond."""
        return self.rate * self.sample_width // 1000

    def wire(self) -> dict[str, Any]:
        """The format object as the session shows it."""
        if self.type == "audio/pcm":
            return {"type": "audio/pcm", "rate": 24_000}
        return {"type": self.type}

    @classmethod
    def from_session(cls, value: object) -> AudioFormat:
        """The format named by a session's ``format`` object (PCM16 when absent or unknown)."""
        kind = value.get("type") if isinstance(value, Mapping) else None
        if kind == "audio/pcmu":
            return cls("audio/pcmu")
        if kind == "audio/pcma":
            return cls("audio/pcma")
        return cls("audio/pcm")

    def decode(self, data: bytes) -> array[int]:
        """Samples (signed 16-bit values) of ``data``; a trailing odd byte of PCM16 is ignored."""
        if self.type == "audio/pcmu":
            return array("h", (_ULAW_TABLE[byte] for byte in data))
        if self.type == "audio/pcma":
            return array("h", (_ALAW_TABLE[byte] for byte in data))
        samples = array("h")
        samples.frombytes(data[: len(data) - len(data) % 2])
        if sys.byteorder == "big":  # pragma: no cover
            samples.byteswap()
        return samples

    def encode(self, samples: Sequence[int]) -> bytes:
        """``samples`` (signed 16-bit values) in this format."""
        if self.type == "audio/pcmu":
            return bytes(ulaw_encode(value) for value in samples)
        if self.type == "audio/pcma":
            return bytes(alaw_encode(value) for value in samples)
        values = array("h", samples)
        if sys.byteorder == "big":  # pragma: no cover
            values.byteswap()
        return values.tobytes()


PCM16 = AudioFormat("audio/pcm")

# ------------------------------------------------------------------ G.711


def ulaw_encode(sample: int) -> int:
    """One signed 16-bit sample as a G.711 µ-law byte."""
    value = sample >> 2
    mask = 0xFF
    if value < 0:
        value, mask = -value, 0x7F
    value = min(value, 8159) + 33
    segment = max(0, value.bit_length() - 6)
    if segment >= 8:  # the loudest values
        return 0x7F ^ mask
    return ((segment << 4) | ((value >> (segment + 1)) & 0x0F)) ^ mask


def ulaw_decode(byte: int) -> int:
    """One G.711 µ-law byte as a signed 16-bit sample."""
    value = ~byte & 0xFF
    magnitude = (((value & 0x0F) << 3) + 0x84) << ((value & 0x70) >> 4)
    return 0x84 - magnitude if value & 0x80 else magnitude - 0x84


def alaw_encode(sample: int) -> int:
    """One signed 16-bit sample as a G.711 A-law byte."""
    value = sample >> 3
    mask = 0xD5
    if value < 0:
        value, mask = -value - 1, 0x55
    segment = max(0, value.bit_length() - 5)  # at most 7: 16-bit input fits
    shift = 1 if segment < 2 else segment
    return ((segment << 4) | ((value >> shift) & 0x0F)) ^ mask


def alaw_decode(byte: int) -> int:
    """One G.711 A-law byte as a signed 16-bit sample."""
    value = byte ^ 0x55
    magnitude = (value & 0x0F) << 4
    segment = (value & 0x70) >> 4
    if segment == 0:
        magnitude += 8
    else:
        magnitude = (magnitude + 0x108) << (segment - 1)
    return magnitude if value & 0x80 else -magnitude


_ULAW_TABLE = tuple(ulaw_decode(byte) for byte in range(256))
_ALAW_TABLE = tuple(alaw_decode(byte) for byte in range(256))

# ------------------------------------------------------------------ levels


def _rms(samples: Sequence[int]) -> float:
    if not samples:
        return 0.0
    return math.sqrt(sum(value * value for value in samples) / len(samples)) / 32768.0


def frame_levels(data: bytes, fmt: AudioFormat = PCM16) -> list[float]:
    """The RMS level (0..1 of full scale) of each whole 20 ms frame of ``data``."""
    size = fmt.bytes_per_ms * FRAME_MS
    return [
        _rms(fmt.decode(data[start : start + size]))
        for start in range(0, len(data) - size + 1, size)
    ]


# ------------------------------------------------------------------ signals


def _voiced(count: int, rate: int, pitch: float, amplitude: float, start: int = 0) -> list[float]:
    """A voiced sound: a fundamental and two harmonics (values in -1..1)."""
    step = 2 * math.pi * pitch / rate
    return [
        amplitude
        * (0.6 * math.sin(step * n) + 0.3 * math.sin(2 * step * n) + 0.1 * math.sin(3 * step * n))
        for n in range(start, start + count)
    ]


def _quantize(values: Sequence[float]) -> list[int]:
    return [max(-32768, min(32767, round(value * 32767))) for value in values]


def speech(ms: int, fmt: AudioFormat = PCM16, *, amplitude: float = 0.5) -> bytes:
    """``ms`` milliseconds of a steady voiced signal (a 150 Hz voice, RMS about
    ``amplitude`` / 2 of full scale: 0.25 by default, far above the server's
    default detection level of 0.05) in ``fmt``."""
    count = fmt.rate * ms // 1000
    return fmt.encode(_quantize(_voiced(count, fmt.rate, 150.0, amplitude)))


def silence(ms: int, fmt: AudioFormat = PCM16) -> bytes:
    """``ms`` milliseconds of digital silence in ``fmt``."""
    return fmt.encode([0] * (fmt.rate * ms // 1000))


def word_chunk_count(word: str) -> int:
    """How many 40 ms chunks the synthetic voice takes to say ``word`` (2 to 25)."""
    return min(25, 2 + len(word.strip()) // 3)


def voice_chunks(word: str, fmt: AudioFormat = PCM16) -> tuple[bytes, ...]:
    """The synthetic voice saying ``word``: :func:`word_chunk_count` chunks of
    40 ms in ``fmt``.  The pitch depends on the word, the loudness follows a
    syllable envelope (rise, hold, fall) and the last 20 ms are silent, so the
    level varies from chunk to chunk as a voice's does."""
    pitch = 110.0 + 15.0 * (sum(word.encode("utf-8")) % 8)
    return _voice(word_chunk_count(word), pitch, fmt)


@lru_cache(maxsize=512)
def _voice(chunks: int, pitch: float, fmt: AudioFormat) -> tuple[bytes, ...]:
    per_chunk = fmt.rate * CHUNK_MS // 1000
    total = chunks * per_chunk
    gap = fmt.rate * FRAME_MS // 1000
    voiced = total - gap
    values = _voiced(voiced, fmt.rate, pitch, 0.45)
    edge = max(1, voiced // 4)
    for n in range(voiced):
        values[n] *= min(1.0, n / edge, (voiced - n) / edge)
    samples = _quantize(values) + [0] * gap
    return tuple(
        fmt.encode(samples[start : start + per_chunk]) for start in range(0, total, per_chunk)
    )
