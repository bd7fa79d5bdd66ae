"""JSON interop: the camelCase wire shapes of the TypeScript package.

Everything here is built from :mod:`cattrs` converters configured once, at
import time; there is no hand-written ``to_dict`` per class.

* :func:`to_wire` turns an emitted payload, a state snapshot, a config, a
  transport event or an error into the JSON-ready dict the TypeScript package
  uses (``call_id`` -> ``callId``, enums as strings, tuples as lists, errors as
  ``{"name", "message", "code"}``, ``None`` kept as ``null``).
* :func:`event_from_wire` parses a transport event from that shape.
* :func:`structure_config` / :func:`structure_character` accept a value object,
  ``None`` or a mapping with the snake_case keys of the Python classes;
  :func:`config_from_wire` / :func:`character_from_wire` read the camelCase shape.

Every malformed input raises :class:`~charivo_fsm.errors.CharivoValidationError`
whose message names the offending field path, e.g.
``event "tool.call": field "callId" must be str or null`` or
``config: unknown key "voicee"``.  No other exception type escapes for any input.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable, Mapping
from enum import Enum, StrEnum
from types import NoneType, UnionType
from typing import Any, Literal, Union, get_args, get_origin, overload

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from .errors import (
    CharivoError,
    CharivoProviderError,
    CharivoStateError,
    CharivoTimeoutError,
    CharivoTransportError,
    CharivoValidationError,
)
from .events import EVENT_TYPES, StateUpdate, TransportEvent
from .model import (
    Character,
    CharacterVoice,
    RealtimeSessionConfig,
    RealtimeState,
    RealtimeTool,
    ResponseState,
    ResponseStatus,
    SessionState,
    TurnDetection,
)
from .payloads import EMITTED_EVENTS, StatePayload

__all__ = [
    "character_from_wire",
    "config_from_wire",
    "event_from_wire",
    "structure_character",
    "structure_config",
    "to_wire",
]

#: Nesting deeper than this inside free-form mappings (tool args, outputs,
#: usage, tool parameters) is rejected instead of risking a RecursionError.
_MAX_DEPTH = 200
#: At most this many problems are listed in one error message.
_MAX_PROBLEMS = 5
#: Keys and type names quoted in messages are cut to this length.
_MAX_SHOWN = 60

_ERROR_CLASSES: dict[str, type[CharivoError]] = {
    cls.__name__: cls
    for cls in (
        CharivoError,
        CharivoStateError,
        CharivoTimeoutError,
        CharivoTransportError,
        CharivoProviderError,
        CharivoValidationError,
    )
}


def _camel(name: str) -> str:
    """``call_id`` -> ``callId``; names without underscores are unchanged."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _show(text: object) -> str:
    """A key or name as it appears in a message (long ones are shortened)."""
    shown = text if isinstance(text, str) else repr(text)
    return shown if len(shown) <= _MAX_SHOWN else shown[: _MAX_SHOWN - 1] + "…"


class _Invalid(Exception):
    """A value at ``path`` (relative to where it is caught) is not what was expected.

    ``nullable`` marks an optional field, so event messages can say "or null".
    """

    def __init__(self, expected: str, *, nullable: bool = False) -> None:
        super().__init__(expected)
        self.expected = expected
        self.nullable = nullable
        self.path: tuple[str | int, ...] = ()

    def under(self, part: str | int) -> _Invalid:
        self.path = (part, *self.path)
        return self


# --------------------------------------------------------------------------
# Private wire shapes (used in both directions)
# --------------------------------------------------------------------------


@attrs.frozen(slots=True)
class _WireError:
    """``{"name", "message", "code"}`` (a provider error adds the service's fields)."""

    message: str
    name: str | None = None
    code: str | None = None
    provider_code: str | None = None
    provider_type: str | None = None
    param: str | None = None


@attrs.frozen(slots=True)
class _WireResponse:
    """``state.response`` of a ``StateUpdate``; ``None`` members are omitted on output."""

    status: ResponseStatus | None = None
    text: str | None = None


@attrs.frozen(slots=True)
class _WireStateBody:
    """``state`` of a ``StateUpdate``: only ``response`` may be set (D9)."""

    response: _WireResponse | None = None


@attrs.frozen(slots=True)
class _WireStateUpdate:
    state: _WireStateBody


# --------------------------------------------------------------------------
# Free-form JSON values (tool args/outputs, usage, tool parameters)
# --------------------------------------------------------------------------


def _json_value(value: Any, depth: int, *, outgoing: bool) -> Any:
    """A plain JSON-compatible copy of ``value``.

    Mappings become dicts with str keys, lists and tuples become lists and enums
    their values.  When ``outgoing`` (``to_wire``), exceptions become wire errors
    and supported attrs objects are unstructured too.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, Enum):
        return _json_value(value.value, depth, outgoing=outgoing)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if depth >= _MAX_DEPTH:
        raise _Invalid(f"nested at most {_MAX_DEPTH} levels deep")
    if isinstance(value, Mapping):
        result: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, Enum):
                key = key.value
            if not isinstance(key, str):
                raise _Invalid(f"a mapping with str keys (got key {_show(key)})")
            try:
                result[str(key)] = _json_value(item, depth + 1, outgoing=outgoing)
            except _Invalid as exc:
                raise exc.under(key) from None
        return result
    if isinstance(value, (list, tuple)):
        items: list[Any] = []
        for index, item in enumerate(value):
            try:
                items.append(_json_value(item, depth + 1, outgoing=outgoing))
            except _Invalid as exc:
                raise exc.under(index) from None
        return items
    if outgoing:
        if isinstance(value, BaseException):
            return _error_to_wire(value)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return _bytes_to_wire(bytes(value))
        if type(value) in _OUT_CLASSES:
            return _OUT.unstructure(value)
    raise _Invalid(f"JSON-compatible (got {_show(type(value).__name__)})")


def _json_out(value: Any) -> Any:
    return _json_value(value, 0, outgoing=True)


# --------------------------------------------------------------------------
# Output converter (to_wire)
# --------------------------------------------------------------------------


def _error_to_wire(error: BaseException) -> dict[str, Any]:
    if isinstance(error, CharivoError):
        message, code = error.message, error.code
    else:
        try:
            message = str(error)
        except Exception:
            message = type(error).__name__
        code = None
    wire: dict[str, Any] = {"name": type(error).__name__, "message": message, "code": code}
    if isinstance(error, CharivoProviderError):
        # The service's own fields (CONTRACT §11), so a frontend can tell a rate
        # limit from an invalid value.
        wire["providerCode"] = error.provider_code
        wire["providerType"] = error.provider_type
        wire["param"] = error.param
    return wire


def _bytes_to_wire(value: bytes) -> str:
    """Audio bytes travel as base64 text under the same key."""
    return base64.b64encode(value).decode("ascii")


def _enum_value(member: Enum) -> Any:
    return _json_out(member.value)


def _is_container_type(t: Any) -> bool:
    origin = get_origin(t) or t
    return isinstance(origin, type) and issubclass(origin, (Mapping, list, tuple, set, frozenset))


def _labelled(name: str, hook: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Wrap a field's unstructure hook so errors name the field."""

    def labelled(value: Any) -> Any:
        try:
            return hook(value)
        except _Invalid as exc:
            raise exc.under(name) from None

    return labelled


_EVENT_CLASSES: frozenset[type[Any]] = frozenset(EVENT_TYPES.values())
_OUT_CLASSES: frozenset[type[Any]] = frozenset(
    {
        *EMITTED_EVENTS.values(),
        *_EVENT_CLASSES,
        RealtimeState,
        SessionState,
        ResponseState,
        RealtimeSessionConfig,
        RealtimeTool,
        Character,
        CharacterVoice,
        TurnDetection,
    }
)
_GENERATED_OUT: frozenset[type[Any]] = (_OUT_CLASSES - {StatePayload, StateUpdate}) | {
    _WireStateUpdate,
    _WireStateBody,
    _WireResponse,
}


def _unstructure_factory(cl: type[Any], conv: cattrs.Converter) -> Callable[[Any], Any]:
    attrs.resolve_types(cl)
    overrides: dict[str, Any] = {}  # attribute name -> cattrs override
    for field in attrs.fields(cl):
        wire_name = _camel(field.name)
        overrides[field.name] = override(
            rename=wire_name,
            unstruct_hook=_labelled(wire_name, conv.get_unstructure_hook(field.type)),
        )
    fields_fn = make_dict_unstructure_fn(
        cl, conv, _cattrs_omit_if_default=cl is _WireResponse, **overrides
    )
    if cl not in _EVENT_CLASSES:
        return fields_fn
    tag: str = cl.type

    def event_to_wire(event: Any) -> dict[str, Any]:
        return {"type": tag, **fields_fn(event)}

    return event_to_wire


def _state_update_to_wire(event: StateUpdate) -> dict[str, Any]:
    shape = _WireStateUpdate(
        _WireStateBody(_WireResponse(event.response_status, event.response_text))
    )
    return {"type": StateUpdate.type, **_OUT.unstructure(shape)}


def _state_payload_to_wire(payload: StatePayload) -> dict[str, Any]:
    return {"state": _OUT.unstructure(payload.state, RealtimeState)}


_OUT = cattrs.Converter(unstructure_fallback_factory=lambda _t: _json_out)
_OUT.register_unstructure_hook(str, _json_out)
_OUT.register_unstructure_hook(Enum, _enum_value)
_OUT.register_unstructure_hook(StrEnum, _enum_value)  # before ``str`` in a StrEnum's MRO
_OUT.register_unstructure_hook(BaseException, _error_to_wire)
_OUT.register_unstructure_hook(bytes, _bytes_to_wire)
_OUT.register_unstructure_hook_func(_is_container_type, _json_out)
_OUT.register_unstructure_hook_factory(lambda t: t in _GENERATED_OUT, _unstructure_factory)
_OUT.register_unstructure_hook(StateUpdate, _state_update_to_wire)
_OUT.register_unstructure_hook(StatePayload, _state_payload_to_wire)


def to_wire(obj: object) -> dict[str, Any]:
    """The camelCase, ``json.dumps``-able dict of a payload, state, config, event or error.

    Raises :class:`CharivoValidationError` for an unsupported object or when a
    free-form mapping inside it holds something that is not JSON-compatible.
    """
    if isinstance(obj, BaseException):
        return _error_to_wire(obj)
    if type(obj) not in _OUT_CLASSES:
        raise CharivoValidationError(
            f"to_wire: unsupported object of type {_show(type(obj).__name__)}"
        )
    label = f"to_wire({type(obj).__name__})"
    try:
        result: dict[str, Any] = _OUT.unstructure(obj)
    except _Invalid as exc:
        raise CharivoValidationError(
            f'{label}: "{_path_text(exc.path)}" must be {exc.expected}'
        ) from None
    except CharivoValidationError:
        raise
    except Exception as exc:  # e.g. RecursionError on a cyclic structure
        raise CharivoValidationError(f"{label}: cannot convert ({type(exc).__name__})") from None
    return result


# --------------------------------------------------------------------------
# Input converters (event_from_wire, structure_config, ...)
# --------------------------------------------------------------------------


def _read_str(value: Any, _t: Any) -> str:
    if isinstance(value, str):
        return value
    raise _Invalid("str")


def _read_int(value: Any, _t: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    raise _Invalid("an integer")


def _read_float(value: Any, _t: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid("a number")
    try:
        number = float(value)
    except OverflowError:
        raise _Invalid("a finite number") from None
    if not math.isfinite(number):
        raise _Invalid("a finite number")
    return number


def _one_of(values: tuple[Any, ...]) -> str:
    return "one of " + ", ".join(f'"{v}"' for v in values)


def _read_enum(value: Any, cl: type[Enum]) -> Enum:
    if isinstance(value, str):
        for member in cl:
            if member.value == value:
                return member
    raise _Invalid(_one_of(tuple(member.value for member in cl)))


def _is_optional(t: Any) -> bool:
    if get_origin(t) not in (Union, UnionType):
        return False
    args = get_args(t)
    return len(args) == 2 and NoneType in args


def _optional_factory(t: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    inner = next(arg for arg in get_args(t) if arg is not NoneType)
    inner_hook = conv.get_structure_hook(inner)

    def read_optional(value: Any, _t: Any) -> Any:
        if value is None:
            return None
        try:
            return inner_hook(value, inner)
        except _Invalid as exc:
            if not exc.path:
                exc.nullable = True
            raise

    return read_optional


def _is_literal(t: Any) -> bool:
    origin: Any = get_origin(t)
    return origin is Literal


def _literal_factory(t: Any) -> Callable[[Any, Any], Any]:
    allowed = get_args(t)

    def read_literal(value: Any, _t: Any) -> Any:
        if isinstance(value, str):
            for candidate in allowed:
                if candidate == value:
                    return candidate
        raise _Invalid(_one_of(allowed))

    return read_literal


def _is_homogeneous_tuple(t: Any) -> bool:
    args = get_args(t)
    return get_origin(t) is tuple and len(args) == 2 and args[1] is Ellipsis


def _tuple_factory(t: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    inner = get_args(t)[0]
    inner_hook = conv.get_structure_hook(inner)

    def read_tuple(value: Any, _t: Any) -> tuple[Any, ...]:
        if not isinstance(value, (list, tuple)):
            raise _Invalid("a list")
        items: list[Any] = []
        errors: list[Exception] = []
        for index, item in enumerate(value):
            try:
                items.append(inner_hook(item, inner))
            except Exception as exc:
                exc.add_note(IterableValidationNote(f"@ index {index}", index, inner))
                errors.append(exc)
        if errors:
            raise IterableValidationError(f"While structuring {t!r}", errors, t)
        return tuple(items)

    return read_tuple


def _is_mapping_type(t: Any) -> bool:
    origin = get_origin(t) or t
    return isinstance(origin, type) and issubclass(origin, Mapping)


def _read_mapping(value: Any, _t: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _Invalid("a mapping")
    result: dict[str, Any] = _json_value(value, 0, outgoing=False)
    return result


def _is_exception_type(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, BaseException)


def _error_factory(_t: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    read_wire_error = conv.get_structure_hook(_WireError)

    def read_error(value: Any, _t: Any) -> BaseException:
        if isinstance(value, BaseException):
            return value
        if isinstance(value, str):
            return CharivoError(value)
        if not isinstance(value, Mapping):
            raise _Invalid('an error object ({"name", "message", "code"}) or str')
        wire: _WireError = read_wire_error(value, _WireError)
        cls = _ERROR_CLASSES.get(wire.name) if wire.name is not None else None
        if cls is None or cls is CharivoError:
            return CharivoError(wire.message, code=wire.code)
        if cls is CharivoProviderError:
            return CharivoProviderError(
                wire.message,
                provider_code=wire.provider_code,
                provider_type=wire.provider_type,
                param=wire.param,
            )
        return cls(wire.message)

    return read_error


def _structure_factory(camel: bool) -> Callable[[Any, cattrs.Converter], Any]:
    def factory(cl: type[Any], conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
        attrs.resolve_types(cl)
        renames: dict[str, Any] = {}  # attribute name -> cattrs override
        if camel:
            for field in attrs.fields(cl):
                if _camel(field.name) != field.name:
                    renames[field.name] = override(rename=_camel(field.name))
        from_dict = make_dict_structure_fn(cl, conv, **renames)

        def read_attrs(value: Any, _t: Any) -> Any:
            if isinstance(value, cl):
                return value
            if not isinstance(value, Mapping):
                raise _Invalid("a mapping")
            return from_dict(value, cl)

        return read_attrs

    return factory


def _read_bytes(value: Any, _t: Any) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _Invalid("base64 text") from None
    raise _Invalid("base64 text")


def _make_reader(*, camel: bool) -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    conv.register_structure_hook(bytes, _read_bytes)
    # Class-based hooks replace cattrs' lenient ``str(x)`` / ``int(x)`` / ``float(x)``.
    conv.register_structure_hook(str, _read_str)
    conv.register_structure_hook(int, _read_int)
    conv.register_structure_hook(float, _read_float)
    conv.register_structure_hook(Enum, _read_enum)
    conv.register_structure_hook(StrEnum, _read_enum)  # before ``str`` in a StrEnum's MRO
    conv.register_structure_hook_func(_is_mapping_type, _read_mapping)
    conv.register_structure_hook_factory(_is_optional, _optional_factory)
    conv.register_structure_hook_factory(_is_literal, _literal_factory)
    conv.register_structure_hook_factory(_is_homogeneous_tuple, _tuple_factory)
    conv.register_structure_hook_factory(_is_exception_type, _error_factory)
    conv.register_structure_hook_factory(attrs.has, _structure_factory(camel))
    return conv


_WIRE_IN = _make_reader(camel=True)
_SNAKE_IN = _make_reader(camel=False)


# --------------------------------------------------------------------------
# Error messages
# --------------------------------------------------------------------------

_Problem = tuple[str, str, _Invalid | str]  # (path, kind, detail)


_MAX_PATH = 120


def _path_text(parts: tuple[str | int, ...], base: str = "") -> str:
    """``("tools", 0, "name")`` -> ``tools[0].name`` (very long paths are elided)."""
    text = base
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text = f"{text}.{_show(part)}" if text else _show(part)
    if len(text) > _MAX_PATH:
        half = _MAX_PATH // 2
        text = f"{text[:half]}…{text[-half:]}"
    return text


def _note_of(exc: BaseException, kind: type[Any]) -> Any:
    for note in getattr(exc, "__notes__", ()):
        if isinstance(note, kind):
            return note
    return None


def _problems(exc: BaseException, path: str, camel: bool) -> list[_Problem]:
    if isinstance(exc, ClassValidationError):
        found: list[_Problem] = []
        for sub in exc.exceptions:
            note = _note_of(sub, AttributeValidationNote)
            if note is None:
                found += _problems(sub, path, camel)
                continue
            sub_path = _path_text((_camel(note.name) if camel else note.name,), path)
            if isinstance(sub, KeyError):
                found.append((sub_path, "missing", ""))
            else:
                found += _problems(sub, sub_path, camel)
        return found
    if isinstance(exc, IterableValidationError):
        found = []
        for sub in exc.exceptions:
            note = _note_of(sub, IterableValidationNote)
            index = note.index if note is not None and isinstance(note.index, int) else None
            sub_path = _path_text((index,), path) if index is not None else path
            found += _problems(sub, sub_path, camel)
        return found
    if isinstance(exc, ForbiddenExtraKeysError):
        return [
            (_path_text((key if isinstance(key, str) else repr(key),), path), "extra", "")
            for key in sorted(exc.extra_fields, key=lambda k: (not isinstance(k, str), repr(k)))
        ]
    if isinstance(exc, _Invalid):
        return [(_path_text(exc.path, path), "type", exc)]
    if isinstance(exc, CharivoError):
        return [(path, "other", exc.message)]
    if isinstance(exc, BaseExceptionGroup):
        found = []
        for member in exc.exceptions:
            found += _problems(member, path, camel)
        return found
    return [(path, "other", f"is invalid ({type(exc).__name__})")]


def _render(problems: list[_Problem], *, event: bool) -> str:
    noun = "field" if event else "key"
    lines: list[str] = []
    for path, kind, detail in problems[:_MAX_PROBLEMS]:
        if kind == "missing":
            lines.append(f'missing required {noun} "{path}"')
        elif kind == "extra":
            lines.append(f'unknown {noun} "{path}"')
        elif isinstance(detail, _Invalid):
            expected = detail.expected + (" or null" if event and detail.nullable else "")
            where = f'{noun} "{path}"' if event else f'"{path}"'
            lines.append(f"{where} must be {expected}" if path else f"must be {expected}")
        elif path:
            lines.append(f'{noun} "{path}": {detail}' if event else f'"{path}": {detail}')
        else:
            lines.append(str(detail))
    if len(problems) > _MAX_PROBLEMS:
        lines.append(f"and {len(problems) - _MAX_PROBLEMS} more problem(s)")
    return "; ".join(lines) or "malformed input"


def _read(
    conv: cattrs.Converter, value: Mapping[Any, Any], cl: type[Any], prefix: str, *, event: bool
) -> Any:
    camel = conv is _WIRE_IN
    try:
        return conv.get_structure_hook(cl)(value, cl)
    except Exception as exc:
        problems = _problems(exc, "", camel)
        if event and cl is _WireStateUpdate:
            problems = [_d9(problem) for problem in problems]
        raise CharivoValidationError(f"{prefix}: {_render(problems, event=event)}") from None


def _d9(problem: _Problem) -> _Problem:
    path, kind, _detail = problem
    if kind == "extra" and path.startswith("state.") and path.count(".") == 1:
        return (path, "other", 'cannot be set by a transport (only "state.response", D9)')
    return problem


# --------------------------------------------------------------------------
# Public readers
# --------------------------------------------------------------------------


def event_from_wire(data: object) -> TransportEvent:
    """Parse a transport event from its wire shape (``{"type": ..., <camelCase fields>}``).

    Raises :class:`CharivoValidationError` naming the bad field for anything
    malformed (and never another exception type).
    """
    if not isinstance(data, Mapping):
        raise CharivoValidationError(
            f"event: expected a mapping (got {_show(type(data).__name__)})"
        )
    try:
        if "type" not in data:
            raise CharivoValidationError('event: missing required field "type"')
        kind = data["type"]
        if not isinstance(kind, str):
            raise CharivoValidationError(
                f'event: field "type" must be str (got {_show(type(kind).__name__)})'
            )
        cls = EVENT_TYPES.get(kind)
        if cls is None:
            raise CharivoValidationError(f'event: unknown type "{_show(kind)}"')
        body = {key: item for key, item in data.items() if key != "type"}
        prefix = f'event "{kind}"'
        if cls is StateUpdate:
            shape: _WireStateUpdate = _read(_WIRE_IN, body, _WireStateUpdate, prefix, event=True)
            response = shape.state.response or _WireResponse()
            return StateUpdate(response_status=response.status, response_text=response.text)
        event: TransportEvent = _read(_WIRE_IN, body, cls, prefix, event=True)
        return event
    except CharivoValidationError:
        raise
    except Exception as exc:  # a misbehaving Mapping implementation
        raise CharivoValidationError(f"event: malformed input ({type(exc).__name__})") from None


def _read_value_object(conv: cattrs.Converter, value: object, cl: type[Any], prefix: str) -> Any:
    if value is None or isinstance(value, cl):
        return value
    if not isinstance(value, Mapping):
        raise CharivoValidationError(
            f"{prefix}: expected a mapping or {cl.__name__} (got {_show(type(value).__name__)})"
        )
    return _read(conv, value, cl, prefix, event=False)


@overload
def structure_config(value: None) -> None: ...
@overload
def structure_config(
    value: RealtimeSessionConfig | Mapping[str, Any],
) -> RealtimeSessionConfig: ...
@overload
def structure_config(
    value: RealtimeSessionConfig | Mapping[str, Any] | None,
) -> RealtimeSessionConfig | None: ...
def structure_config(
    value: RealtimeSessionConfig | Mapping[str, Any] | None,
) -> RealtimeSessionConfig | None:
    """A :class:`RealtimeSessionConfig` from itself, ``None`` or a snake_case mapping.

    ``tools`` may hold :class:`RealtimeTool` objects or mappings with the keys
    ``name``, ``description``, ``parameters`` and ``type``.  Unknown keys and wrong
    types raise :class:`CharivoValidationError` naming the key.
    """
    config: RealtimeSessionConfig | None = _read_value_object(
        _SNAKE_IN, value, RealtimeSessionConfig, "config"
    )
    return config


@overload
def structure_character(value: None) -> None: ...
@overload
def structure_character(value: Character | Mapping[str, Any]) -> Character: ...
@overload
def structure_character(value: Character | Mapping[str, Any] | None) -> Character | None: ...
def structure_character(value: Character | Mapping[str, Any] | None) -> Character | None:
    """A :class:`Character` from itself, ``None`` or a snake_case mapping.

    ``voice`` may be a :class:`CharacterVoice` or a mapping with ``voice_id``,
    ``rate``, ``pitch`` and ``volume``.
    """
    character: Character | None = _read_value_object(_SNAKE_IN, value, Character, "character")
    return character


def config_from_wire(data: object) -> RealtimeSessionConfig:
    """A :class:`RealtimeSessionConfig` from its camelCase wire shape (``maxTokens``,
    ``toolChoice``); the inverse of :func:`to_wire` for configs."""
    if data is None:
        raise CharivoValidationError("config: expected a mapping (got NoneType)")
    config: RealtimeSessionConfig = _read_value_object(
        _WIRE_IN, data, RealtimeSessionConfig, "config"
    )
    return config


def character_from_wire(data: object) -> Character:
    """A :class:`Character` from its camelCase wire shape (``voice.voiceId``)."""
    if data is None:
        raise CharivoValidationError("character: expected a mapping (got NoneType)")
    character: Character = _read_value_object(_WIRE_IN, data, Character, "character")
    return character
