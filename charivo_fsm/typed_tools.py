"""Tools from typed async functions: :func:`tool`.

``@tool`` turns an ``async def`` into a :class:`~charivo_fsm.RealtimeToolRegistration`:

* the tool's name is the function's name (or ``name=``);
* its description is the docstring's text before any parameter section (or
  ``description=``); parameter descriptions come from ``Annotated[T, "text"]`` or,
  failing that, from the docstring's ``Args:`` (Google), ``Parameters`` (NumPy) or
  ``:param name:`` (Sphinx) entries;
* its ``parameters`` JSON Schema comes from the annotations (see :func:`tool` for the
  supported types); a parameter with a default is optional, every other one is
  required, and no other property is allowed;
* a parameter annotated :class:`~charivo_fsm.RealtimeToolContext` receives the call's
  context and is not part of the schema.

Everything is checked when the decorator runs: a function that is not ``async``, has
``*args``/``**kwargs``, a positional-only or unannotated parameter, or an annotation
without a JSON Schema counterpart raises :class:`~charivo_fsm.CharivoValidationError`
naming the function and the parameter.  The generated schema is compiled by the same
validator as a hand-written one (D8), so the model's arguments are validated before
the function runs; the handler then converts them to the annotated Python types (an
``Enum`` member, an attrs instance, a ``tuple``, a ``float`` for an integral number
given to a ``float`` parameter) and calls the function with keyword arguments.
"""

from __future__ import annotations

import enum
import functools
import inspect
import math
import re
import types
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, overload

import attrs

from .errors import CharivoValidationError
from .model import RealtimeTool, RealtimeToolContext, RealtimeToolRegistration
from .tools import compile_schema, is_async_callable

__all__ = ["ToolFunction", "tool"]

ToolFunction = Callable[..., Awaitable[Mapping[str, Any]]]
"""An ``async def`` whose parameters are annotated and which returns a JSON object."""

_SUPPORTED = (
    "str, int, float, bool, Literal[...], an Enum of str or int values, list[T], "
    "tuple[T, ...], dict[str, T], T | None, a TypedDict, an attrs class, "
    'Annotated[T, "description"]'
)


class _Unsupported(Exception):
    """An annotation with no JSON Schema counterpart, at ``path`` (dotted, relative)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(problem)
        self.path = path
        self.problem = problem


Converter = Callable[[Any], Any]


@attrs.frozen
class _Shape:
    """The JSON Schema of one annotation and how to turn a valid value into its type.

    ``convert`` is ``None`` when the validated JSON value already is the Python value.
    """

    schema: dict[str, Any]
    convert: Converter | None = None


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__qualname__
    text = repr(annotation)
    return text.replace("typing.", "")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# ---------------------------------------------------------------------- annotations


def _is_typeddict(annotation: Any) -> bool:
    return isinstance(annotation, type) and typing.is_typeddict(annotation)


def _literal_shape(values: tuple[Any, ...], path: str) -> _Shape:
    kinds: set[str] = set()
    for value in values:
        if value is None:
            kinds.add("null")
        elif isinstance(value, bool):
            kinds.add("boolean")
        elif isinstance(value, int):
            kinds.add("integer")
        elif isinstance(value, str):
            kinds.add("string")
        else:
            raise _Unsupported(
                path, f"Literal value {value!r} is not a str, int, bool or None"
            )
    schema: dict[str, Any] = {"enum": list(values)}
    if len(kinds) == 1:
        schema = {"type": kinds.pop(), **schema}
    convert: Converter | None = None
    if "integer" in kinds or schema.get("type") == "integer":
        # An integral float is an integer (D8): give the function the int it declared.
        def convert(value: Any) -> Any:
            if isinstance(value, float) and value.is_integer():
                return int(value)
            return value

    return _Shape(schema, convert)


def _enum_shape(cls: type[enum.Enum], path: str) -> _Shape:
    members = list(cls)
    if not members:
        raise _Unsupported(path, f"the Enum {cls.__qualname__} has no members")
    values = [member.value for member in members]
    kinds = set()
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise _Unsupported(
                path,
                f"the Enum {cls.__qualname__} has a value that is not a str or int "
                f"({value!r})",
            )
        kinds.add("string" if isinstance(value, str) else "integer")
    schema: dict[str, Any] = {}
    schema["type"] = kinds.pop() if len(kinds) == 1 else sorted(kinds)
    schema["enum"] = values
    by_value = {value: member for value, member in zip(values, members, strict=True)}

    def convert(value: Any) -> Any:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return by_value[value]

    return _Shape(schema, convert)


def _object_shape(
    fields: Sequence[tuple[str, Any, bool, Any]],
    path: str,
    build: Callable[[dict[str, Any]], Any] | None,
    seen: frozenset[Any],
    owner: Any,
) -> _Shape:
    """An object with named ``fields`` (key, annotation, required, default)."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    converters: dict[str, Converter] = {}
    inner_seen = seen | {owner}
    for key, annotation, is_required, default in fields:
        shape = _shape(annotation, _join(path, key), inner_seen)
        schema = dict(shape.schema)
        if not is_required:
            _add_default(schema, default)
        properties[key] = schema
        if is_required:
            required.append(key)
        if shape.convert is not None:
            converters[key] = shape.convert
    schema_: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema_["required"] = required
    schema_["additionalProperties"] = False
    if not converters and build is None:
        return _Shape(schema_)

    def convert(value: Any) -> Any:
        data = {
            key: (converters[key](item) if key in converters else item)
            for key, item in value.items()
        }
        return build(data) if build is not None else data

    return _Shape(schema_, convert)


def _class_hints(cls: Any, path: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls, include_extras=True)
    except Exception as exc:
        raise _Unsupported(
            path, f"the annotations of {cls.__qualname__} cannot be resolved ({exc})"
        ) from None


def _typeddict_shape(cls: Any, path: str, seen: frozenset[Any]) -> _Shape:
    hints = _class_hints(cls, path)
    required_keys = getattr(cls, "__required_keys__", frozenset(hints))
    fields = []
    for key, annotation in hints.items():
        # With postponed annotations, Python 3.11 computes __required_keys__ before the
        # NotRequired/Required wrappers are resolved: the resolved hint decides then.
        is_required = key in required_keys
        while True:
            wrapper = _required_wrapper(annotation)
            if wrapper is None:
                break
            if wrapper == "NotRequired":
                is_required = False
            elif wrapper == "Required":
                is_required = True
            annotation = typing.get_args(annotation)[0]
        fields.append((key, annotation, is_required, inspect.Parameter.empty))
    return _object_shape(fields, path, None, seen, cls)


def _required_wrapper(annotation: Any) -> str | None:
    """``"Required"``, ``"NotRequired"`` or ``"ReadOnly"`` for such a TypedDict wrapper."""
    origin = typing.get_origin(annotation)
    name = getattr(origin, "_name", None)
    return name if name in {"Required", "NotRequired", "ReadOnly"} else None


def _attrs_shape(cls: Any, path: str, seen: frozenset[Any]) -> _Shape:
    hints = _class_hints(cls, path)
    fields = []
    for field in attrs.fields(cls):
        if not field.init:
            continue
        key = field.alias or field.name
        annotation = hints.get(field.name, field.type)
        if annotation is None:
            raise _Unsupported(
                _join(path, key), f"the attrs field {cls.__qualname__}.{field.name} has no type"
            )
        has_default = field.default is not attrs.NOTHING
        default: Any = inspect.Parameter.empty
        if has_default and not isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
            default = field.default
        fields.append((key, annotation, not has_default, default))

    def build(data: dict[str, Any]) -> Any:
        return cls(**data)

    return _object_shape(fields, path, build, seen, cls)


def _shape(annotation: Any, path: str, seen: frozenset[Any] = frozenset()) -> _Shape:
    """The :class:`_Shape` of ``annotation``; raise :class:`_Unsupported` otherwise."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)

    if origin is typing.Annotated:
        shape = _shape(args[0], path, seen)
        descriptions = [item for item in annotation.__metadata__ if isinstance(item, str)]
        if descriptions:
            return _Shape({**shape.schema, "description": descriptions[0]}, shape.convert)
        return shape
    if annotation is str:
        return _Shape({"type": "string"})
    if annotation is bool:
        return _Shape({"type": "boolean"})
    if annotation is int:
        return _Shape({"type": "integer"}, _to_int)
    if annotation is float:
        return _Shape({"type": "number"}, _to_float)
    if origin is Literal:
        return _literal_shape(args, path)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _enum_shape(annotation, path)
    if origin is typing.Union or origin is types.UnionType:
        return _union_shape(args, path, seen)
    if origin in (list, Sequence) and len(args) == 1:
        item = _shape(args[0], f"{path}[]", seen)
        return _Shape({"type": "array", "items": item.schema}, _list_of(item.convert, list))
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        item = _shape(args[0], f"{path}[]", seen)
        return _Shape({"type": "array", "items": item.schema}, _list_of(item.convert, tuple))
    if origin in (dict, Mapping) and len(args) == 2:
        if args[0] is not str:
            raise _Unsupported(path, f"{_type_name(annotation)}: object keys must be str")
        value = _shape(args[1], f"{path}{{}}", seen)
        return _Shape(
            {"type": "object", "additionalProperties": value.schema},
            _dict_of(value.convert),
        )
    if annotation is RealtimeToolContext:
        raise _Unsupported(path, "RealtimeToolContext can only be a parameter of its own")
    if _is_typeddict(annotation) or attrs.has(annotation):
        if annotation in seen:
            raise _Unsupported(path, f"{annotation.__qualname__} refers to itself")
        if _is_typeddict(annotation):
            return _typeddict_shape(annotation, path, seen)
        return _attrs_shape(annotation, path, seen)
    hint = ""
    if annotation in (list, tuple, dict) or origin in (list, tuple, dict):
        hint = " (give the item type: list[str], tuple[int, ...], dict[str, float])"
    raise _Unsupported(path, f"{_type_name(annotation)} has no JSON Schema counterpart{hint}")


def _union_shape(args: tuple[Any, ...], path: str, seen: frozenset[Any]) -> _Shape:
    options = [arg for arg in args if arg is not type(None)]
    nullable = len(options) < len(args)
    shapes = [_shape(option, path, seen) for option in options]
    if len(shapes) == 1:
        (only,) = shapes
        convert = only.convert
        schema = only.schema
        if nullable:
            if set(schema) == {"type"} and isinstance(schema["type"], str):
                schema = {"type": [schema["type"], "null"]}
            else:
                schema = {"anyOf": [schema, {"type": "null"}]}
            if convert is not None:
                inner = convert

                def convert(value: Any) -> Any:
                    return None if value is None else inner(value)

        return _Shape(schema, convert)
    # Several alternatives: their values must need no conversion, since a valid value
    # may match more than one of them.
    for option, shape in zip(options, shapes, strict=True):
        if shape.convert is not None and option not in (int, float):
            raise _Unsupported(
                path,
                f"the union {' | '.join(_type_name(arg) for arg in args)} has the alternative "
                f"{_type_name(option)}, whose values need converting; only unions of "
                "str, int, float, bool, Literal and JSON containers of those are supported",
            )
    alternatives = [shape.schema for shape in shapes]
    if nullable:
        alternatives.append({"type": "null"})
    if all(set(item) == {"type"} and isinstance(item["type"], str) for item in alternatives):
        kinds = [item["type"] for item in alternatives]
        return _Shape({"type": kinds})
    return _Shape({"anyOf": alternatives})


def _to_int(value: Any) -> Any:
    return int(value) if isinstance(value, float) else value


def _to_float(value: Any) -> Any:
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _list_of(item: Converter | None, kind: type) -> Converter | None:
    if item is None:
        return None if kind is list else tuple
    return lambda value: kind(item(element) for element in value)


def _dict_of(item: Converter | None) -> Converter | None:
    if item is None:
        return None
    return lambda value: {key: item(element) for key, element in value.items()}


def _add_default(schema: dict[str, Any], default: Any) -> None:
    """Show a parameter's default to the model when JSON can carry it."""
    if default is inspect.Parameter.empty:
        return
    if isinstance(default, enum.Enum):
        default = default.value
    if default is None or isinstance(default, (str, bool, int)):
        schema["default"] = default
    elif isinstance(default, float) and math.isfinite(default):
        schema["default"] = default


# ------------------------------------------------------------------------ docstrings

_GOOGLE_HEADER = re.compile(r"^\s*(Args|Arguments|Parameters|Params)\s*:\s*$")
_OTHER_HEADER = re.compile(
    r"^\s*(Returns?|Yields?|Raises|Examples?|Notes?|See Also|Attributes|Warnings?)\s*:?\s*$"
)
_NUMPY_RULE = re.compile(r"^\s*-{3,}\s*$")
_SPHINX_PARAM = re.compile(r"^\s*:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")
_GOOGLE_ENTRY = re.compile(r"^(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_NUMPY_ENTRY = re.compile(r"^(\w+)\s*(?::.*)?$")


def _parse_docstring(doc: str | None) -> tuple[str | None, dict[str, str]]:
    """``(description, {parameter: description})`` from a cleaned docstring."""
    if not doc:
        return None, {}
    lines = doc.splitlines()
    params: dict[str, str] = {}
    summary: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if _GOOGLE_HEADER.match(line):
            index = _google_section(lines, index + 1, params)
            continue
        if line.strip() in {"Parameters", "Params", "Arguments"} and _NUMPY_RULE.match(
            following
        ):
            index = _numpy_section(lines, index + 2, params)
            continue
        if _OTHER_HEADER.match(line) or (line.strip() and _NUMPY_RULE.match(following)):
            index = _skip_section(lines, index + 1)
            continue
        sphinx = _SPHINX_PARAM.match(line)
        if sphinx:
            text = [sphinx.group(2).strip()]
            index += 1
            while index < len(lines) and lines[index].startswith((" ", "\t")):
                text.append(lines[index].strip())
                index += 1
            params[sphinx.group(1)] = " ".join(part for part in text if part)
            continue
        if re.match(r"^\s*:(returns?|raises?|rtype|type)\b", line):
            index += 1
            while index < len(lines) and lines[index].startswith((" ", "\t")):
                index += 1
            continue
        summary.append(line)
        index += 1
    description = "\n".join(summary).strip() or None
    return description, params


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _google_section(lines: list[str], index: int, params: dict[str, str]) -> int:
    base: int | None = None
    current: str | None = None
    while index < len(lines):
        line = lines[index]
        if not line.strip():
            index += 1
            continue
        if base is None:
            base = _indent(line)
            if base == 0:
                return index
        if _indent(line) < base:
            return index
        if _indent(line) == base:
            entry = _GOOGLE_ENTRY.match(line.strip())
            if entry is None:
                return index
            current = entry.group(1)
            params[current] = entry.group(2).strip()
        elif current is not None:
            params[current] = f"{params[current]} {line.strip()}".strip()
        index += 1
    return index


def _numpy_section(lines: list[str], index: int, params: dict[str, str]) -> int:
    current: str | None = None
    while index < len(lines):
        line = lines[index]
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if line.strip() and _NUMPY_RULE.match(following):
            return index  # the next section
        if not line.strip():
            index += 1
            continue
        if _indent(line) == 0:
            entry = _NUMPY_ENTRY.match(line.strip())
            if entry is None:
                return index
            current = entry.group(1)
            params[current] = ""
        elif current is not None:
            params[current] = f"{params[current]} {line.strip()}".strip()
        index += 1
    return index


def _skip_section(lines: list[str], index: int) -> int:
    if index < len(lines) and _NUMPY_RULE.match(lines[index]):
        index += 1
    while index < len(lines):
        line = lines[index]
        if line.strip() and _indent(line) == 0:
            following = lines[index + 1] if index + 1 < len(lines) else ""
            if (
                _GOOGLE_HEADER.match(line)
                or _OTHER_HEADER.match(line)
                or _NUMPY_RULE.match(following)
                or _SPHINX_PARAM.match(line)
            ):
                return index
        index += 1
    return index


# --------------------------------------------------------------------------- builder


def _function_name(fn: Any) -> str:
    target = fn.func if isinstance(fn, functools.partial) else fn
    return str(getattr(target, "__name__", None) or type(fn).__name__)


def _resolve_hints(fn: Any, label: str, signature: inspect.Signature) -> dict[str, Any]:
    target = fn.func if isinstance(fn, functools.partial) else fn
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:
        pass
    # Find the parameter whose annotation cannot be resolved, to name it.
    globalns = getattr(inspect.unwrap(target), "__globals__", {})
    hints: dict[str, Any] = {}
    for parameter in signature.parameters.values():
        annotation = parameter.annotation
        if isinstance(annotation, str):
            try:
                # the application's own annotation text, as typing.get_type_hints does
                annotation = eval(annotation, globalns)
            except Exception as exc:
                raise CharivoValidationError(
                    f'{label}: parameter "{parameter.name}" has an annotation that cannot '
                    f"be resolved ({parameter.annotation!r}: {type(exc).__name__}: {exc})"
                ) from None
        hints[parameter.name] = annotation
    return hints


def _build(
    fn: Any,
    name: str | None,
    description: str | None,
    timeout: float | None,
) -> RealtimeToolRegistration:
    function_name = _function_name(fn)
    tool_name = function_name if name is None else name
    label = f'tool "{tool_name}" ({function_name})' if tool_name != function_name else (
        f'tool "{tool_name}"'
    )
    if not isinstance(tool_name, str) or not tool_name:
        raise CharivoValidationError(f"tool name must be a non-empty string (got {tool_name!r})")
    if not callable(fn):
        raise CharivoValidationError(
            f"tool expects an async function (got a {type(fn).__name__}, which is not callable)"
        )
    if inspect.isclass(fn) or not is_async_callable(fn):
        kind = "an async generator" if inspect.isasyncgenfunction(fn) else "not async"
        raise CharivoValidationError(
            f"{label}: {function_name} is {kind}; a tool must be an async function "
            "(async def). Run blocking code from it with anyio.to_thread.run_sync."
        )
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise CharivoValidationError(f"{label}: its signature cannot be read ({exc})") from None
    hints = _resolve_hints(fn, label, signature)
    doc_description, doc_params = _parse_docstring(inspect.getdoc(fn))

    properties: dict[str, Any] = {}
    required: list[str] = []
    converters: dict[str, Converter] = {}
    context_name: str | None = None
    for parameter in signature.parameters.values():
        where = f'{label}: parameter "{parameter.name}"'
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            raise CharivoValidationError(
                f"{label}: *{parameter.name} is not allowed; declare every argument "
                "as a named, annotated parameter"
            )
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            raise CharivoValidationError(
                f"{label}: **{parameter.name} is not allowed; declare every argument "
                "as a named, annotated parameter"
            )
        if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise CharivoValidationError(
                f"{where} is positional-only; the model's arguments are passed by name"
            )
        if parameter.annotation is inspect.Parameter.empty:
            raise CharivoValidationError(
                f"{where} has no annotation; annotate it ({_SUPPORTED}) or, for the "
                "call's context, RealtimeToolContext"
            )
        annotation = hints.get(parameter.name, parameter.annotation)
        if annotation is RealtimeToolContext:
            if context_name is not None:
                raise CharivoValidationError(
                    f'{where}: "{context_name}" already receives the RealtimeToolContext'
                )
            context_name = parameter.name
            continue
        try:
            shape = _shape(annotation, "")
        except _Unsupported as unsupported:
            inner = f' (at "{parameter.name}{_sep(unsupported.path)}")' if unsupported.path else ""
            raise CharivoValidationError(
                f"{where} has an unsupported annotation{inner}: {unsupported.problem}. "
                f"Supported: {_SUPPORTED}"
            ) from None
        except RecursionError:
            raise CharivoValidationError(f"{where}: its annotation is nested too deeply") from None
        schema = dict(shape.schema)
        if "description" not in schema and doc_params.get(parameter.name):
            schema["description"] = doc_params[parameter.name]
        if parameter.default is inspect.Parameter.empty:
            required.append(parameter.name)
        else:
            _add_default(schema, parameter.default)
        properties[parameter.name] = schema
        if shape.convert is not None:
            converters[parameter.name] = shape.convert

    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required
    parameters["additionalProperties"] = False
    definition = RealtimeTool(
        name=tool_name,
        description=description if description is not None else doc_description,
        parameters=parameters,
    )
    compile_schema(parameters, tool_name)  # a generated schema must compile (fails loudly)

    async def handler(args: dict[str, Any], context: RealtimeToolContext) -> Mapping[str, Any]:
        kwargs: dict[str, Any] = {}
        for key, value in args.items():
            convert = converters.get(key)
            if convert is None:
                kwargs[key] = value
                continue
            try:
                kwargs[key] = convert(value)
            except CharivoValidationError:
                raise
            except Exception as exc:
                raise CharivoValidationError(
                    f'Realtime tool "{tool_name}" arguments could not be converted: '
                    f'property "{key}": {type(exc).__name__}: {exc}',
                    cause=exc,
                ) from exc
        if context_name is not None:
            kwargs[context_name] = context
        result: Mapping[str, Any] = await fn(**kwargs)
        return result

    handler.__name__ = function_name
    handler.__qualname__ = getattr(fn, "__qualname__", function_name)
    handler.__doc__ = getattr(fn, "__doc__", None)
    handler.__wrapped__ = fn  # type: ignore[attr-defined]
    return RealtimeToolRegistration(definition=definition, handler=handler, timeout=timeout)


def _sep(path: str) -> str:
    return path if path.startswith("[") or path.startswith("{") else f".{path}"


@overload
def tool(
    fn: ToolFunction,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
) -> RealtimeToolRegistration: ...


@overload
def tool(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
) -> Callable[[ToolFunction], RealtimeToolRegistration]: ...


def tool(
    fn: ToolFunction | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
) -> RealtimeToolRegistration | Callable[[ToolFunction], RealtimeToolRegistration]:
    """Build a :class:`~charivo_fsm.RealtimeToolRegistration` from a typed async function.

    Use it as ``@tool``, as ``@tool(name=..., description=..., timeout=...)`` or call
    it: ``tool(get_weather, timeout=5)``.  ``name`` defaults to the function's name,
    ``description`` to its docstring (without the parameter section), ``timeout``
    (seconds) to the manager's ``default_tool_timeout``.

    Annotations and the JSON Schema they give:

    ========================================= ===========================================
    annotation                                schema (the function receives)
    ========================================= ===========================================
    ``str`` / ``int`` / ``float`` / ``bool``  ``string`` / ``integer`` / ``number`` /
                                              ``boolean`` (an ``int`` for ``2.0``, a
                                              ``float`` for ``2``)
    ``Literal["a", "b"]``                     ``enum`` (with its ``type`` when shared)
    an ``Enum`` of str or int values          ``enum`` of the values (the member)
    ``list[T]``, ``Sequence[T]``              ``array`` of ``T`` (a ``list``)
    ``tuple[T, ...]``                         ``array`` of ``T`` (a ``tuple``)
    ``dict[str, T]``, ``Mapping[str, T]``     ``object`` whose values are ``T``
    ``T | None``, ``Optional[T]``             ``T`` or ``null``
    ``A | B`` of str, int, float, bool, ...   ``type: [..]`` or ``anyOf`` (as given)
    a ``TypedDict``                           ``object``: its keys, ``NotRequired``
                                              ones optional (a ``dict``)
    an attrs class                            ``object``: its ``__init__`` arguments,
                                              defaulted ones optional (an instance)
    ``Annotated[T, "text"]``                  ``T`` with ``description: "text"``
    ``RealtimeToolContext``                   not in the schema: the call's context
    ========================================= ===========================================

    A parameter with a default is optional (JSON-able defaults are shown to the model
    as ``default``); no other property is allowed (``additionalProperties: false``, at
    every level of a TypedDict or attrs class).

    Raises :class:`~charivo_fsm.CharivoValidationError` at decoration time, naming the
    function and the parameter, for a function that is not ``async``, ``*args`` or
    ``**kwargs``, a positional-only or unannotated parameter, or an annotation without
    a JSON Schema counterpart (``Any``, ``object``, bare ``list``, ``set[...]``, ...).

    The registration's handler validates nothing itself (the manager validates the
    arguments against the schema first, D8), converts them, calls the function with
    keyword arguments and returns its result, which must be a JSON object (D17.9).  The
    original function is ``registration.handler.__wrapped__``.
    """
    if fn is None:

        def decorate(function: ToolFunction) -> RealtimeToolRegistration:
            return _build(function, name, description, timeout)

        return decorate
    return _build(fn, name, description, timeout)
