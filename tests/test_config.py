"""The config builder, the default prompt and the base-config merge (R84–R87, D13, T01, T11)."""

from __future__ import annotations

import re

import pytest

from charivo_fsm.config import (
    DEFAULT_REALTIME_AGENT_INSTRUCTIONS,
    STAY_IN_CHARACTER_LINE,
    UNNAMED_CHARACTER_LINE,
    build_character_instructions,
    build_realtime_session_config,
    merge_config,
    with_tools,
)
from charivo_fsm.errors import CharivoValidationError
from charivo_fsm.model import Character, CharacterVoice, RealtimeSessionConfig, RealtimeTool
from charivo_fsm.wire import structure_config

DEFAULT_LINES = DEFAULT_REALTIME_AGENT_INSTRUCTIONS.split("\n")

HIYORI = Character(
    id="hiyori",
    name="Hiyori",
    description="A cheerful schoolgirl who loves the seaside",
    personality="warm, curious and a little playful",
    voice=CharacterVoice(voice_id="alloy"),
)

TOOL = RealtimeTool(name="wave", description="Wave a hand")


# ------------------------------------------------------------------ T01 / R87


def test_t01_builds_character_aware_config_without_injecting_tools() -> None:
    config = build_realtime_session_config(HIYORI)

    assert config.provider is None
    assert config.model is None
    assert config.transport == "webrtc"
    assert config.voice == "alloy"
    assert config.tool_choice == "auto"
    assert config.tools is None
    assert config.temperature is None
    assert config.max_tokens is None

    instructions = config.instructions
    assert instructions is not None
    assert instructions.startswith("You are Hiyori.\n")
    assert STAY_IN_CHARACTER_LINE in instructions.split("\n")
    assert "A cheerful schoolgirl who loves the seaside." in instructions.split("\n")
    assert "Your personality is warm, curious and a little playful." in instructions
    assert instructions.endswith(DEFAULT_REALTIME_AGENT_INSTRUCTIONS)
    assert not re.search(r"\bat most\b", instructions, re.IGNORECASE)


def test_t01_character_prompt_line_order() -> None:
    instructions = build_character_instructions(HIYORI)
    assert instructions.split("\n") == [
        "You are Hiyori.",
        STAY_IN_CHARACTER_LINE,
        "A cheerful schoolgirl who loves the seaside.",
        "Your personality is warm, curious and a little playful.",
        *DEFAULT_LINES,
    ]


def test_r87_build_without_arguments() -> None:
    config = build_realtime_session_config()
    assert config == RealtimeSessionConfig(
        transport="webrtc",
        tool_choice="auto",
        instructions=DEFAULT_REALTIME_AGENT_INSTRUCTIONS,
    )
    assert config.voice is None
    assert config.provider is None
    assert config.model is None
    assert config.tools is None


def test_stay_in_character_line_says_so() -> None:
    line = STAY_IN_CHARACTER_LINE.lower()
    assert "role" in line or "character" in line
    assert "entire conversation" in line


# ------------------------------------------------------------- R86: DEFAULT


def test_default_has_exactly_six_lines_without_outer_newlines() -> None:
    assert len(DEFAULT_LINES) == 6
    assert not DEFAULT_REALTIME_AGENT_INSTRUCTIONS.startswith(("\n", " "))
    assert not DEFAULT_REALTIME_AGENT_INSTRUCTIONS.endswith(("\n", " "))
    assert all(line.strip() == line and line for line in DEFAULT_LINES)


def test_default_point_1_live_spoken_conversation() -> None:
    line = DEFAULT_LINES[0].lower()
    assert "out loud" in line and "live" in line and "real time" in line


def test_default_point_2_natural_and_brief() -> None:
    line = DEFAULT_LINES[1].lower()
    assert "conversation" in line and "short enough" in line and "listen" in line


def test_default_point_3_proactive_tool_use() -> None:
    line = DEFAULT_LINES[2].lower()
    assert "tools" in line and "own initiative" in line
    assert "clearer" in line and "more present" in line


def test_default_point_4_justified_tool_calls() -> None:
    line = DEFAULT_LINES[3].lower()
    assert "every tool call needs a genuine reason" in line
    assert "quick series of actions" in line and "appear responsive" in line


def test_default_point_5_never_break_character() -> None:
    line = DEFAULT_LINES[4].lower()
    assert "never step out of your role" in line
    assert "an ai" in line and "language model" in line and "an assistant" in line


def test_default_point_6_only_speakable_words() -> None:
    line = DEFAULT_LINES[5].lower()
    assert "only words that are meant to be heard" in line
    assert "through tools" in line
    assert "never mention tool calls, tool names or their arguments" in line
    assert "stage directions in brackets or parentheses" in line
    assert "if no tool exists for an action, leave the action out" in line
    assert "instead of describing it" in line


def test_default_prescribes_no_tool_call_counts() -> None:
    text = DEFAULT_REALTIME_AGENT_INSTRUCTIONS.lower()
    assert "at most" not in text
    assert "no more than" not in text
    assert not re.search(r"\d", text)
    for word in ("one", "two", "three", "once", "twice", "single"):
        assert not re.search(rf"\b{word}\b", text), word


# ------------------------------------------------------------ R85 edge cases


def _lines(character: Character) -> list[str]:
    text = build_character_instructions(character)
    assert text.endswith("\n" + DEFAULT_REALTIME_AGENT_INSTRUCTIONS)
    return text[: -len(DEFAULT_REALTIME_AGENT_INSTRUCTIONS) - 1].split("\n")


def test_no_character_gives_default_only() -> None:
    assert build_character_instructions(None) == DEFAULT_REALTIME_AGENT_INSTRUCTIONS


def test_name_is_inserted_verbatim() -> None:
    assert _lines(Character(name="Dr."))[0] == "You are Dr.."
    assert _lines(Character(name="  Mio  "))[0] == "You are   Mio  ."


@pytest.mark.parametrize("name", [None, ""])
def test_unnamed_character_uses_fallback_line(name: str | None) -> None:
    assert _lines(Character(name=name)) == [UNNAMED_CHARACTER_LINE, STAY_IN_CHARACTER_LINE]


@pytest.mark.parametrize(
    ("description", "line"),
    [
        ("Quiet", "Quiet."),
        ("Quiet ", "Quiet ."),
        ("Done.", "Done."),
        ("Wow!", "Wow!"),
        ("Really?", "Really?"),
        ("Ends with newline.\n", "Ends with newline.\n."),
        ("Ellipsis…", "Ellipsis…."),
    ],
)
def test_description_gets_a_period_unless_it_ends_a_sentence(description: str, line: str) -> None:
    text = build_character_instructions(Character(name="A", description=description))
    assert text.startswith(f"You are A.\n{STAY_IN_CHARACTER_LINE}\n{line}\n")


@pytest.mark.parametrize(
    ("personality", "trait"),
    [
        ("  calm and kind!?  ", "calm and kind"),
        ("Calm .", "Calm "),
        ("bold", "bold"),
        ("shy...", "shy"),
        ("\tgentle\n", "gentle"),
        ("what?!.", "what"),
    ],
)
def test_personality_is_stripped_then_loses_trailing_punctuation(
    personality: str, trait: str
) -> None:
    lines = _lines(Character(name="A", personality=personality))
    assert lines[-1] == f"Your personality is {trait}."


def test_empty_description_and_personality_are_skipped() -> None:
    assert _lines(Character(name="A", description="", personality="")) == [
        "You are A.",
        STAY_IN_CHARACTER_LINE,
    ]


# ------------------------------------------------------------------ R84


def test_base_values_win_over_character() -> None:
    base = RealtimeSessionConfig(
        provider="openai",
        transport="websocket",
        voice="marin",
        model="gpt-realtime",
        instructions="Be terse.",
        temperature=0.7,
        max_tokens=256,
        tools=(TOOL,),
        tool_choice="required",
    )
    assert build_realtime_session_config(HIYORI, base) == base


def test_empty_strings_in_base_are_kept() -> None:
    base = RealtimeSessionConfig(voice="", instructions="")
    config = build_realtime_session_config(HIYORI, base)
    assert config.voice == ""
    assert config.instructions == ""


def test_character_without_voice_leaves_voice_unset() -> None:
    assert build_realtime_session_config(Character(name="A")).voice is None
    no_id = Character(name="A", voice=CharacterVoice(rate=1.0))
    assert build_realtime_session_config(no_id).voice is None


def test_t11_builder_leaves_provider_and_model_unset() -> None:
    # what the manager builds for start_session() with no config and no tools
    config = build_realtime_session_config(None, with_tools(None, ()))
    assert config.transport == "webrtc"
    assert config.tool_choice == "auto"
    assert config.provider is None
    assert config.model is None
    assert config.tools == ()
    assert config.instructions == DEFAULT_REALTIME_AGENT_INSTRUCTIONS


def test_builder_accepts_a_mapping() -> None:
    config = build_realtime_session_config(HIYORI, {"voice": "marin", "max_tokens": 5})
    assert config.voice == "marin"
    assert config.max_tokens == 5


# --------------------------------------------------------- D13 merge_config


def test_merge_both_none_is_none() -> None:
    assert merge_config(None, None) is None


def test_merge_none_never_clears() -> None:
    base = RealtimeSessionConfig(provider="openai", model="m", voice="marin", temperature=0.5)
    assert merge_config(base, RealtimeSessionConfig()) == base
    assert merge_config(base, RealtimeSessionConfig(voice=None)) == base
    assert merge_config(base, {"voice": None, "model": None}) == base
    assert merge_config(base, None) == base


def test_merge_override_wins_field_by_field() -> None:
    base = RealtimeSessionConfig(provider="openai", model="m", voice="marin")
    merged = merge_config(base, RealtimeSessionConfig(voice="alloy", tool_choice="none"))
    assert merged == RealtimeSessionConfig(
        provider="openai", model="m", voice="alloy", tool_choice="none"
    )


def test_merge_keeps_empty_strings_from_the_override() -> None:
    merged = merge_config(RealtimeSessionConfig(voice="marin"), RealtimeSessionConfig(voice=""))
    assert merged is not None and merged.voice == ""


def test_merge_drops_override_tools() -> None:
    other = RealtimeTool(name="other")
    assert merge_config(None, RealtimeSessionConfig(voice="a", tools=(TOOL,))) == (
        RealtimeSessionConfig(voice="a")
    )
    base = RealtimeSessionConfig(tools=(TOOL,))
    merged = merge_config(base, RealtimeSessionConfig(tools=(other,)))
    assert merged is not None and merged.tools == (TOOL,)
    merged = merge_config(RealtimeSessionConfig(), {"tools": [other]})
    assert merged is not None and merged.tools is None


def test_merge_is_sticky_across_merges() -> None:
    base = merge_config(None, RealtimeSessionConfig(provider="openai", model="gpt-realtime"))
    base = merge_config(base, RealtimeSessionConfig(voice="alloy"))
    assert base == RealtimeSessionConfig(provider="openai", model="gpt-realtime", voice="alloy")


def test_with_tools_replaces_the_tool_list() -> None:
    config = with_tools(RealtimeSessionConfig(voice="a", tools=(TOOL,)), [])
    assert config == RealtimeSessionConfig(voice="a", tools=())
    assert with_tools(None, [TOOL]).tools == (TOOL,)


# ------------------------------------------------------------ mappings


def test_structure_config_mapping_with_tool_mappings() -> None:
    config = structure_config(
        {"voice": "a", "tools": [{"name": "wave", "description": "Wave"}, TOOL]}
    )
    assert config == RealtimeSessionConfig(
        voice="a", tools=(RealtimeTool(name="wave", description="Wave"), TOOL)
    )
    assert structure_config(None) is None


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ({"maxTokens": 5}, "maxTokens"),
        ({"max_tokens": "5"}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"transport": "carrier-pigeon"}, "transport"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": "wave"}, "tools"),
        ({"tools": [42]}, "tools[0]"),
        ({"tools": [{"name": "x", "bogus": 1}]}, "bogus"),
        ({"tools": [{"description": "no name"}]}, "name"),
    ],
)
def test_structure_config_rejects_bad_mappings_naming_the_key(value: object, needle: str) -> None:
    with pytest.raises(CharivoValidationError) as info:
        structure_config(value)  # type: ignore[arg-type]
    assert needle in str(info.value)


def test_structure_config_rejects_non_mappings() -> None:
    with pytest.raises(CharivoValidationError):
        structure_config(["voice"])  # type: ignore[arg-type]
