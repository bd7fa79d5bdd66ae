"""Session-config helpers: the builder, the base-config merge and the default prompt.

* :func:`build_realtime_session_config` turns an optional character and an optional
  base config into the *effective* config the transport receives (every field
  present, ``transport`` and ``tool_choice`` filled in, instructions derived from
  the character when the base does not set them).
* :func:`merge_config` folds a caller's override into the sticky base config
  (``None`` means "not specified" and never clears anything; tools are dropped
  because tool definitions come only from the registry).
* :func:`with_tools` replaces the tool list of a config.
* :func:`coerce_session_config` accepts a config or a ``Mapping`` with the same
  snake_case keys, as every public entry point that takes a config does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from .model import Character, RealtimeSessionConfig, RealtimeTool
from .wire import structure_config

__all__ = [
    "DEFAULT_REALTIME_AGENT_INSTRUCTIONS",
    "STAY_IN_CHARACTER_LINE",
    "UNNAMED_CHARACTER_LINE",
    "build_character_instructions",
    "build_realtime_session_config",
    "merge_config",
    "with_tools",
]

DEFAULT_REALTIME_AGENT_INSTRUCTIONS: str = "\n".join(
    (
        # 1. the setting: a live, spoken exchange
        "You are talking with someone out loud, live and in real time.",
        # 2. natural, speakable answers
        "Reply the way a person would in conversation, keeping each answer short enough"
        " to be comfortable to listen to.",
        # 3. use the tools proactively when they help
        "Reach for your available tools on your own initiative whenever they make the"
        " exchange clearer or make you feel more present.",
        # 4. but every tool call needs a reason
        "Every tool call needs a genuine reason; never fire off a quick series of actions"
        " merely to appear responsive.",
        # 5. never break character
        "Never step out of your role, and never describe yourself as an AI, a language"
        " model or an assistant.",
        # 6. only speakable words; act through tools, do not narrate them
        "Say only words that are meant to be heard: carry out actions through tools, never"
        " mention tool calls, tool names or their arguments, never speak stage directions in"
        " brackets or parentheses, and if no tool exists for an action, leave the action out"
        " instead of describing it.",
    )
)
"""The agent guidance appended to every character prompt (and used alone without one).

Six lines joined by ``"\\n"`` (no leading or trailing newline), one per point:
live spoken conversation; short natural answers; proactive tool use; justified
tool calls; never breaking character; speakable words only.
"""

STAY_IN_CHARACTER_LINE: str = (
    "Keep to this role for the entire conversation, speaking and reacting as this character would."
)
"""The second line of every character prompt."""

UNNAMED_CHARACTER_LINE: str = "You are the character described here."
"""The first line of a character prompt when the character has no name.

A character whose ``name`` is ``None`` or ``""`` would otherwise yield the
meaningless ``"You are ."``; this sentence replaces it.
"""

_SENTENCE_END = (".", "!", "?")


def build_character_instructions(character: Character | None) -> str:
    """The instructions derived from ``character`` (R85).

    Without a character this is :data:`DEFAULT_REALTIME_AGENT_INSTRUCTIONS`.
    Otherwise these lines joined by ``"\\n"``:

    1. ``You are <name>.`` with the name verbatim (``"Dr."`` gives ``"You are Dr.."``),
       or :data:`UNNAMED_CHARACTER_LINE` when the name is ``None`` or empty;
    2. :data:`STAY_IN_CHARACTER_LINE`;
    3. the description, untrimmed, with ``"."`` appended unless its very last
       character is ``.``, ``!`` or ``?`` (so ``"Quiet "`` gives ``"Quiet ."`` and
       ``"Hi.\\n"`` gives ``"Hi.\\n."``); skipped when ``None`` or empty;
    4. ``Your personality is <p>.`` where ``p`` is the personality with surrounding
       whitespace stripped (``str.strip``) and then any trailing run of ``.!?``
       removed; skipped when ``None`` or empty;
    5. :data:`DEFAULT_REALTIME_AGENT_INSTRUCTIONS`.
    """
    if character is None:
        return DEFAULT_REALTIME_AGENT_INSTRUCTIONS
    lines: list[str] = []
    name = character.name
    lines.append(f"You are {name}." if name else UNNAMED_CHARACTER_LINE)
    lines.append(STAY_IN_CHARACTER_LINE)
    description = character.description
    if description:
        lines.append(description if description.endswith(_SENTENCE_END) else description + ".")
    personality = character.personality
    if personality:
        trait = personality.strip().rstrip("".join(_SENTENCE_END))
        lines.append(f"Your personality is {trait}.")
    lines.append(DEFAULT_REALTIME_AGENT_INSTRUCTIONS)
    return "\n".join(lines)


_CONFIG_KEYS = tuple(field.name for field in attrs.fields(RealtimeSessionConfig))


def build_realtime_session_config(
    character: Character | None = None,
    base_config: RealtimeSessionConfig | Mapping[str, Any] | None = None,
) -> RealtimeSessionConfig:
    """The effective session config for ``character`` on top of ``base_config`` (R84).

    ============ =========================================================
    field        value
    ============ =========================================================
    transport    ``base.transport``, else ``"webrtc"``
    voice        ``base.voice``, else the character's ``voice.voice_id``
    instructions ``base.instructions``, else :func:`build_character_instructions`
    tool_choice  ``base.tool_choice``, else ``"auto"``
    others       provider, model, temperature, max_tokens and tools are copied
                 from the base and never filled in
    ============ =========================================================

    "Else" applies only when the base value is ``None``; empty strings are kept.
    Called without arguments it gives transport ``webrtc``, tool choice ``auto``,
    no voice and :data:`DEFAULT_REALTIME_AGENT_INSTRUCTIONS`.
    """
    coerced = structure_config(base_config)
    base = coerced if coerced is not None else RealtimeSessionConfig()
    voice = base.voice
    if voice is None and character is not None and character.voice is not None:
        voice = character.voice.voice_id
    instructions = base.instructions
    if instructions is None:
        instructions = build_character_instructions(character)
    return attrs.evolve(
        base,
        transport=base.transport if base.transport is not None else "webrtc",
        voice=voice,
        instructions=instructions,
        tool_choice=base.tool_choice if base.tool_choice is not None else "auto",
    )


def merge_config(
    base: RealtimeSessionConfig | Mapping[str, Any] | None,
    override: RealtimeSessionConfig | Mapping[str, Any] | None,
) -> RealtimeSessionConfig | None:
    """Fold ``override`` into ``base`` (D13).

    Each field of ``override`` that is not ``None`` replaces the base's; a
    ``None`` field means "not specified" and keeps the base value (a merge never
    clears a field).  ``override.tools`` is always ignored: tool definitions come
    only from the registry.  Both ``None`` gives ``None``; a missing base is
    treated as an empty config.
    """
    base_config = structure_config(base)
    override_config = structure_config(override)
    if base_config is None and override_config is None:
        return None
    result = base_config if base_config is not None else RealtimeSessionConfig()
    if override_config is None:
        return result
    changes = {
        name: value
        for name in _CONFIG_KEYS
        if name != "tools" and (value := getattr(override_config, name)) is not None
    }
    return attrs.evolve(result, **changes) if changes else result


def with_tools(
    config: RealtimeSessionConfig | None, tools: Iterable[RealtimeTool]
) -> RealtimeSessionConfig:
    """``config`` (an empty config when ``None``) with its tools replaced by ``tools``."""
    base = config if config is not None else RealtimeSessionConfig()
    # (passed through an Any-typed dict: mypy's attrs plugin mistypes the
    # ``tools`` converter's parameter as an unsolved ``Iterable[_T_co]``)
    changes: dict[str, Any] = {"tools": tuple(tools)}
    return attrs.evolve(base, **changes)
