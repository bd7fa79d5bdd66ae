"""The event catalogue (docs/events.md) is rendered from the code and complete."""

from __future__ import annotations

from pathlib import Path

import attrs

from charivo_fsm.catalogue import CATALOGUE, catalogue_markdown
from charivo_fsm.payloads import EMITTED_EVENTS, StatePayload
from charivo_fsm.streams import EmittedEvent

DOC = Path(__file__).resolve().parents[1] / "docs" / "events.md"


def test_every_emitted_event_is_described_with_a_payload_of_its_class() -> None:
    assert list(CATALOGUE) == [name for name in CATALOGUE if name in EMITTED_EVENTS]
    assert set(CATALOGUE) == set(EMITTED_EVENTS)
    for name, (when, example) in CATALOGUE.items():
        assert type(example) is EMITTED_EVENTS[name], name
        assert len(when) > 20, name


def test_the_committed_catalogue_is_what_the_code_renders() -> None:
    assert DOC.read_text() == catalogue_markdown(), (
        "docs/events.md is stale: run `python -m charivo_fsm.catalogue > docs/events.md`"
    )


def test_each_event_lists_every_payload_attribute() -> None:
    text = catalogue_markdown()
    for name, cls in EMITTED_EVENTS.items():
        section = text.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
        names = ["state"] if cls is StatePayload else [f.name for f in attrs.fields(cls)]
        for attribute in names:
            assert f"| `{attribute}` |" in section, (name, attribute)


def test_the_stream_item_type_names_every_event() -> None:
    named: set[str] = set()
    for member in EmittedEvent.__args__:  # type: ignore[attr-defined]
        literal, payload = member.__args__
        named.update(literal.__args__)
        for event_name in literal.__args__:
            assert EMITTED_EVENTS[event_name] is payload, event_name
    assert named == set(EMITTED_EVENTS)
