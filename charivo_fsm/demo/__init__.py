"""``charivo-fsm demo``: a scripted end-to-end voice session with a narrated timeline.

The demo drives the real :class:`~charivo_fsm.RealtimeManager` over the real
:class:`~charivo_fsm.transports.openai.OpenAIRealtimeTransport`, by default
against the embedded :class:`~charivo_fsm.testing.LocalRealtimeServer`
(127.0.0.1, an ephemeral port, the key :data:`DEMO_API_KEY`).  It narrates
every step and event on one line each, with the time since the start, and
checks its own expectations as it goes:

1. start a voice session (audio out, server VAD, input transcription) with a
   character and tools (``getWeather`` plus the avatar tools, with the avatar
   result projector);
2. a message answered with streamed text (the audio transcript) and audio;
3. the model's voice: the ``realtime:audio:delta`` bytes of one answer written
   to a WAV file (PCM16 mono 24 kHz) in a temporary directory or ``--out DIR``,
   checked byte for byte against what the server sent;
4. a tool turn: the tool's output item goes out at once, the transport's
   ``response.create`` only after the calling response's ``response.done``
   (shown from the server's record), then an avatar tool whose result the
   projector turns into ``realtime:expression``;
5. barge-in: while the answer's audio comes in real time, microphone audio
   with speech energy; the server's VAD hears it (``realtime:user:speech:start``),
   ``tts:audio:end`` follows at once, the item is truncated at the played
   position the demo reported with ``mark_played`` (below the audio received),
   the response ends ``interrupted`` and the user's turn is answered;
6. push to talk: turn detection ``manual``, a false start dropped with
   ``clear_audio()``, audio chunks, ``commit_audio()``, a response;
7. a server-side drop, reconnect with backoff (the first recover is refused),
   the conversation replayed into the new service session, and the model
   still knows what was said first (and, on a second transport with
   ``max_replay_items=0``, that it would not without the replay);
8. three concurrent ``update_session`` calls coalesced into at most two patches;
9. an interrupt of a streaming response, truncated where real-time playback
   from the first chunk would be (no ``mark_played``);
10. a stop (``realtime:session:end`` with reason ``user``), then no live
    connection and no task left.

:func:`run_demo` is the entry point of the command (it calls ``anyio.run``);
:func:`demo_session` is the script itself, an ``async`` function that runs on
asyncio and trio.  It returns 0 when every step behaved, 1 otherwise (the
failing step is named).  ``live=True`` runs the same script against the real
OpenAI Realtime API (``OPENAI_API_KEY``); step 7 is then skipped with a note,
since a server-side drop cannot be injected there, and checks that depend on
the local server's record or scripted answers are replaced by weaker ones
(non-empty answers, the tool actually called) that a real model can meet.

Layout: :mod:`.narration` (the timeline, the narrating emitter, the log
capture), :mod:`.script` (the character, messages, the local server's script,
the shared :class:`~.script.Demo`), :mod:`.steps` (session steps),
:mod:`.voice_steps` (voice steps), :mod:`.run` (the step table and the command).
"""

from __future__ import annotations

from .run import STEPS, Inject, demo_session, run_demo
from .script import DEMO_API_KEY, LOCAL_TRIGGERS, WAV_NAME, WEATHER_TOOL, local_reply

__all__ = [
    "DEMO_API_KEY",
    "LOCAL_TRIGGERS",
    "STEPS",
    "WAV_NAME",
    "WEATHER_TOOL",
    "Inject",
    "demo_session",
    "local_reply",
    "run_demo",
]
