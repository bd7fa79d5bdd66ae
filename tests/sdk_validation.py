"""Protocol checks against a schema nobody here wrote: the ``openai`` SDK's models.

Every client event our transport sends must validate against the SDK's
``RealtimeClientEvent`` union as the model its ``type`` names, with no unknown
field at any depth (the SDK's models accept extras, so they are looked for
explicitly) and a lossless round trip.  Every event the local server sends must
validate against ``RealtimeServerEvent`` (the real service itself sends fields
those models do not declare, so extras are allowed there).

``tests/conftest.py`` applies both checks to every :class:`LocalRealtimeServer`
created by any test, after the test.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, get_args, get_origin

from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import BaseModel, TypeAdapter

__all__ = [
    "CLIENT_MODELS",
    "SERVER_MODELS",
    "validate_client_event",
    "validate_server_event",
]

CLIENT_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeClientEvent)
SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)


def _models_by_type(union: Any) -> dict[str, type[BaseModel]]:
    """``type`` literal → SDK model, for the members of an (annotated) union."""
    members = get_args(get_args(union)[0]) if get_origin(union) is Annotated else get_args(union)
    table: dict[str, type[BaseModel]] = {}
    for model in members:
        for literal in get_args(model.model_fields["type"].annotation):
            table[literal] = model
    return table


CLIENT_MODELS = _models_by_type(RealtimeClientEvent)
SERVER_MODELS = _models_by_type(RealtimeServerEvent)


def _extra_fields(value: Any, path: str) -> list[str]:
    """Every field the SDK model did not declare (the SDK models allow extras)."""
    found: list[str] = []
    if isinstance(value, BaseModel):
        found += [f"{path}.{name}" for name in value.model_extra or {}]
        for name in type(value).model_fields:
            found += _extra_fields(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found += _extra_fields(item, f"{path}[{index}]")
    return found


def validate_client_event(event: Mapping[str, Any]) -> None:
    """``event`` is a GA client event: it validates against the SDK's
    ``RealtimeClientEvent`` union, as the model its ``type`` names, with no
    unknown field, and survives a round trip through that model unchanged."""
    event_type = event.get("type")
    if event_type not in CLIENT_MODELS:
        raise ValueError(f"not a GA client event type: {event_type!r}")
    expected = CLIENT_MODELS[event_type]
    expected.model_validate(event)  # precise error messages first
    model = CLIENT_EVENT.validate_python(event)
    assert type(model) is expected
    extras = _extra_fields(model, str(event_type))
    assert not extras, f"unknown fields in {event_type}: {extras}"
    assert model.model_dump(mode="json", exclude_unset=True) == event, (
        f"{event_type} does not survive a round trip through the SDK model"
    )


def validate_server_event(event: Mapping[str, Any]) -> None:
    """``event`` (sent by the local server) is a GA server event.

    Unknown fields are not looked for here: the real service sends fields the
    SDK's models do not declare (``session.id``, ``session.object``)."""
    event_type = event.get("type")
    assert event_type in SERVER_MODELS, f"not a GA server event type: {event_type!r}"
    SERVER_MODELS[event_type].model_validate(event)
    SERVER_EVENT.validate_python(event)
