"""Tool plumbing: schema compilation, argument validation, output checks, the registry.

Rules this module implements (SEMANTICS D8, D17.9, D18.4, R68–R72):

* A tool's ``parameters`` JSON Schema is compiled with ``fastjsonschema`` when the tool
  is registered, never per call.  Compiled validators are shared process-wide through a
  bounded LRU cache keyed by the schema's canonical JSON text, so thousands of managers
  registering the same tools compile each schema once.
* Validation is full JSON Schema (draft 7 unless the schema names another draft with
  ``$schema``).  Every failure is a :class:`~charivo_fsm.errors.CharivoValidationError`
  whose message starts ``Realtime tool "<name>" arguments failed schema validation: `` and
  names the offending property path (``address.zip``, ``tags[1]``).
* Nothing but ``CharivoValidationError`` ever escapes validation, whatever the arguments.
* A tool output must be a JSON-serialisable mapping (D17.9); anything else is refused
  with ``CharivoValidationError`` (D18.4).
"""

from __future__ import annotations

import functools
import inspect
import json
import marshal
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from decimal import Decimal
from typing import Any, NamedTuple, NoReturn

import attrs
import fastjsonschema

from .errors import CharivoValidationError
from .model import RealtimeTool, RealtimeToolRegistration

__all__ = [
    "MAX_ARGUMENT_DEPTH",
    "MAX_TOOL_ARGUMENT_BYTES",
    "SCHEMA_CACHE_SIZE",
    "ProjectorContext",
    "ResultProjector",
    "SchemaCacheInfo",
    "ToolEntry",
    "ToolRegistry",
    "Validator",
    "check_tool_output",
    "clear_schema_cache",
    "compile_schema",
    "format_json_value",
    "schema_cache_info",
    "validate_tool_arguments",
]

Validator = Callable[[Any], Any]
"""A compiled schema: called with the data, raises ``JsonSchemaValueException`` on failure."""

SCHEMA_CACHE_SIZE = 1024
"""How many distinct compiled schemas the process-wide cache keeps (least recently used
entries are evicted beyond that; an evicted schema is simply compiled again)."""

MAX_ARGUMENT_DEPTH = 64
"""Deepest container nesting accepted in tool arguments and tool outputs."""

MAX_TOOL_ARGUMENT_BYTES = 1024 * 1024
"""Largest tool-argument payload accepted, in bytes of its compact JSON encoding (UTF-8).
Read at call time by :func:`validate_tool_arguments` unless it is given ``max_bytes``."""

_ASCII_JSON = json.JSONEncoder(separators=(",", ":"), default=str)
_UTF8_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)

_DRAFT_07 = "http://json-schema.org/draft-07/schema#"
_JSON_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})

# --------------------------------------------------------------------------- formatting


def _format_number(value: int | float | Decimal) -> str:
    """Render a number the way JavaScript's ``JSON.stringify`` does."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    number = float(value)
    if not math.isfinite(number):
        return "null"
    if number == 0:
        return "0"  # also -0
    if number.is_integer() and abs(number) < 1e21:
        return str(int(number))
    text = repr(number)
    if "e" not in text:
        return text
    mantissa, _, exponent_text = text.partition("e")
    exponent = int(exponent_text)
    if -7 < exponent < 21:
        return format(Decimal(text), "f")
    return f"{mantissa}e{'+' if exponent > 0 else '-'}{abs(exponent)}"


def format_json_value(value: Any) -> str:
    """JSON-encode ``value`` like JavaScript's ``JSON.stringify`` (P6).

    Compact separators, no ASCII escaping, integral floats without ``.0``, ``-0`` as
    ``0`` and non-finite numbers as ``null``.  Values JSON cannot express are rendered
    as a JSON string of their ``str()``.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, Decimal)):
        return _format_number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        items = (
            f"{json.dumps(str(key), ensure_ascii=False)}:{format_json_value(item)}"
            for key, item in value.items()
        )
        return "{" + ",".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_json_value(item) for item in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def _join_key(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _join_index(path: str, index: int) -> str:
    return f"{path}[{index}]"


# ------------------------------------------------------------------------ schema cache


class SchemaCacheInfo(NamedTuple):
    hits: int
    misses: int
    size: int
    maxsize: int


_cache: OrderedDict[str, Validator] = OrderedDict()
_cache_lock = threading.Lock()
# The canonical JSON text of a schema is its cache key (the same text as
# ``json.dumps(parameters, sort_keys=True, separators=(",", ":"), allow_nan=False)``).
_KEY_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)
# Computing that key is most of the cost of registering a tool whose schema is already
# compiled, and the same parameters object is typically registered again and again (one
# tool definition, thousands of managers).  So a second, smaller table remembers, per
# parameters dict object, a marshal snapshot of its content, its key and its validator:
# when the object is registered again and marshals to the same bytes, its content is
# unchanged -- marshal output is unambiguous and tells True, 1 and 1.0 apart, so equal
# bytes mean an equal canonical JSON text -- and the key is reused.  A mutated dict, a
# Mapping that is not a plain dict or a value marshal refuses takes the full path.
_seen: dict[int, tuple[Any, bytes, str, Validator]] = {}
_cache_hits = 0
_cache_misses = 0


def schema_cache_info() -> SchemaCacheInfo:
    """Statistics of the process-wide compiled-schema cache."""
    with _cache_lock:
        return SchemaCacheInfo(_cache_hits, _cache_misses, len(_cache), SCHEMA_CACHE_SIZE)


def clear_schema_cache() -> None:
    """Forget every compiled schema (and reset the statistics)."""
    global _cache_hits, _cache_misses
    with _cache_lock:
        _cache.clear()
        _seen.clear()
        _cache_hits = 0
        _cache_misses = 0


class _RefuseRemoteRefs(dict[str, Callable[[str], Any]]):
    """A ``handlers`` mapping for fastjsonschema that claims every URI scheme and refuses
    to fetch anything, so a ``$ref`` can never make the process open a URL or a file."""

    def __contains__(self, scheme: object) -> bool:
        return True

    def __getitem__(self, scheme: str) -> Callable[[str], Any]:
        return _refuse_remote_ref


def _refuse_remote_ref(uri: str) -> Any:
    raise fastjsonschema.JsonSchemaDefinitionException(
        f"remote $ref {uri!r} is not allowed (only references inside the schema)"
    )


_NO_REMOTE_REFS = _RefuseRemoteRefs()

_SCHEMA_MAPS = ("properties", "patternProperties", "definitions", "$defs", "dependencies")
_SCHEMA_SINGLE = (
    "additionalProperties",
    "additionalItems",
    "contains",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
)
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")


def _find_bad_type(schema: Any, path: str) -> tuple[str, str] | None:
    """Return ``(path, problem)`` for the first ``type`` keyword naming no JSON type."""
    if not isinstance(schema, dict):
        return None
    declared = schema.get("type")
    if declared is not None:
        names = declared if isinstance(declared, list) else [declared]
        for item in names:
            if not isinstance(item, str):
                return path, f"uses a schema type that is not a string: {format_json_value(item)}"
            if item not in _JSON_TYPES:
                return path, f"uses unsupported schema type {format_json_value(item)}"
    for keyword in _SCHEMA_MAPS:
        children = schema.get(keyword)
        if isinstance(children, dict):
            for key, child in children.items():
                where = _join_key(path, key) if keyword == "properties" else path
                found = _find_bad_type(child, where)
                if found:
                    return found
    items = schema.get("items")
    if isinstance(items, list):
        for index, child in enumerate(items):
            found = _find_bad_type(child, _join_index(path, index))
            if found:
                return found
    else:
        found = _find_bad_type(items, f"{path}[]")
        if found:
            return found
    for keyword in _SCHEMA_SINGLE:
        found = _find_bad_type(schema.get(keyword), path)
        if found:
            return found
    for keyword in _SCHEMA_LISTS:
        children = schema.get(keyword)
        if isinstance(children, list):
            for child in children:
                found = _find_bad_type(child, path)
                if found:
                    return found
    return None


def _schema_error(name: str | None, problem: str) -> NoReturn:
    if name is None:
        raise CharivoValidationError(f"Invalid tool parameters schema: {problem}")
    raise CharivoValidationError(
        f'Realtime tool "{name}" has an invalid parameters schema: {problem}'
    )


def compile_schema(parameters: Mapping[str, Any], name: str | None = None) -> Validator:
    """Compile a tool's ``parameters`` schema, once per distinct schema in the process.

    ``name`` (the tool's name) only appears in error messages.  The cache key is the
    canonical JSON text (sorted keys, compact separators), so two schemas that differ only
    in key order share one validator; for arguments that break several sibling properties
    at once, which of them is reported follows the property order of the schema compiled
    first.  The cache keeps :data:`SCHEMA_CACHE_SIZE` entries (LRU).

    The top level must have ``"type": "object"``; a missing ``properties`` means ``{}``;
    without ``$schema`` the draft-07 rules apply.  ``$ref`` may only point inside the
    schema.  An invalid schema raises :class:`CharivoValidationError` naming the tool and
    the problem.
    """
    global _cache_hits, _cache_misses
    plain = type(parameters) is dict
    if not plain and not isinstance(parameters, Mapping):
        _schema_error(name, f"parameters must be an object (got {type(parameters).__name__})")
    snapshot = _marshal_snapshot(parameters) if plain else None
    if snapshot is not None:
        with _cache_lock:
            seen = _seen.get(id(parameters))
            if seen is not None and seen[0] is parameters and seen[1] == snapshot:
                cached = _cache.get(seen[2])
                if cached is not None and cached is seen[3]:
                    _cache.move_to_end(seen[2])
                    _cache_hits += 1
                    return cached
    try:
        key = _KEY_JSON.encode(parameters)
    except (TypeError, ValueError, RecursionError) as exc:
        _schema_error(name, f"it is not JSON-serialisable ({exc})")
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            _cache.move_to_end(key)
            _cache_hits += 1
            _remember(parameters, snapshot, key, cached)
            return cached

    # A private, plain-JSON copy in declaration order: fastjsonschema rewrites references
    # in place, and the caller's mapping must stay untouched.
    schema: dict[str, Any] = json.loads(json.dumps(parameters, allow_nan=False))
    if schema.get("type") != "object":
        _schema_error(
            name, f'top-level "type" must be "object" (got {format_json_value(schema.get("type"))})'
        )
    schema.setdefault("properties", {})
    if not isinstance(schema["properties"], dict):
        _schema_error(name, '"properties" must be an object')
    schema.setdefault("$schema", _DRAFT_07)
    try:
        bad = _find_bad_type(schema, "")
    except RecursionError:
        _schema_error(name, "the schema is nested too deeply")
    if bad is not None:
        where, problem = bad
        _schema_error(name, f'property "{where}" {problem}' if where else f"the schema {problem}")
    try:
        validator: Validator = fastjsonschema.compile(
            schema, handlers=_NO_REMOTE_REFS, use_default=False
        )
    except fastjsonschema.JsonSchemaDefinitionException as exc:
        _schema_error(name, str(exc))
    except re.error as exc:
        _schema_error(name, f"invalid regular expression ({exc})")
    except Exception as exc:  # RecursionError, ...
        _schema_error(name, f"{type(exc).__name__}: {exc}")

    with _cache_lock:
        _cache_misses += 1
        existing = _cache.get(key)
        if existing is not None:  # another thread compiled it meanwhile
            _cache.move_to_end(key)
            _remember(parameters, snapshot, key, existing)
            return existing
        _cache[key] = validator
        while len(_cache) > SCHEMA_CACHE_SIZE:
            _cache.popitem(last=False)
        _remember(parameters, snapshot, key, validator)
    return validator


def _marshal_snapshot(parameters: Any) -> bytes | None:
    try:
        return marshal.dumps(parameters, 2)  # version 2: no back-references
    except Exception:  # a value marshal cannot write, nested too deeply, ...
        return None


def _remember(parameters: Any, snapshot: bytes | None, key: str, validator: Validator) -> None:
    """Note ``parameters``' key and validator (call with ``_cache_lock`` held)."""
    if snapshot is None:
        return
    _seen[id(parameters)] = (parameters, snapshot, key, validator)
    while len(_seen) > SCHEMA_CACHE_SIZE:
        del _seen[next(iter(_seen))]


# ------------------------------------------------------------------ argument validation


class _Refused(Exception):
    """Internal: the pre-walk found a problem; ``args[0]`` is the message detail."""


def _normalise(value: Any, path: str, depth: int) -> Any:
    """Copy ``value`` as plain JSON containers (dicts and lists), rejecting non-finite
    numbers, non-string keys, values JSON cannot carry (sets, bytes, objects) and
    nesting deeper than :data:`MAX_ARGUMENT_DEPTH`."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:  # the usual leaves
        return value
    if kind is not dict:
        if isinstance(value, float):
            if not math.isfinite(value):
                raise _Refused(f'property "{path}" must be a finite number')
            return value
        if isinstance(value, Decimal):
            if not value.is_finite():
                raise _Refused(f'property "{path}" must be a finite number')
            return value
    if kind is dict or isinstance(value, Mapping):
        if depth >= MAX_ARGUMENT_DEPTH:
            raise _Refused("arguments are nested too deeply")
        copied: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                where = f'property "{path}"' if path else "arguments"
                raise _Refused(f"{where} must have string keys (got {key!r})")
            copied[key] = _normalise(item, _join_key(path, key), depth + 1)
        return copied
    if isinstance(value, (list, tuple)):
        if depth >= MAX_ARGUMENT_DEPTH:
            raise _Refused("arguments are nested too deeply")
        return [
            _normalise(item, _join_index(path, index), depth + 1)
            for index, item in enumerate(value)
        ]
    if value is None or isinstance(value, (str, int)):  # bool is an int
        return value
    raise _Refused(f'property "{path}" is not a JSON value ({type(value).__name__})')


_COMPARISONS = {
    "minimum": ">=",
    "maximum": "<=",
    "exclusiveMinimum": ">",
    "exclusiveMaximum": "<",
}
_COUNTS = {
    "minLength": ("at least", "characters long", "must be"),
    "maxLength": ("at most", "characters long", "must be"),
    "minItems": ("at least", "items", "must contain"),
    "maxItems": ("at most", "items", "must contain"),
    "minProperties": ("at least", "properties", "must have"),
    "maxProperties": ("at most", "properties", "must have"),
}


def _path_of(name: str | None) -> str:
    """``data.address.zip`` -> ``address.zip``; ``data.tags[1]`` -> ``tags[1]``."""
    text = name or "data"
    if text.startswith("data"):
        text = text[4:]
    return text[1:] if text.startswith(".") else text


def _first_extra_key(value: Any, definition: Mapping[str, Any]) -> str | None:
    if not isinstance(value, Mapping):
        return None
    declared = definition.get("properties")
    declared = declared if isinstance(declared, Mapping) else {}
    patterns = definition.get("patternProperties")
    patterns = patterns if isinstance(patterns, Mapping) else {}
    for key in value:
        if key in declared:
            continue
        if any(re.search(pattern, str(key)) for pattern in patterns):
            continue
        return str(key)
    return None


def _describe(exc: fastjsonschema.JsonSchemaValueException) -> str:
    """Turn a fastjsonschema failure into the message detail (without the prefix)."""
    path = _path_of(exc.name)
    subject = f'property "{path}"' if path else "arguments"
    rule = exc.rule
    definition = exc.definition if isinstance(exc.definition, Mapping) else {}
    rule_value = definition.get(rule) if rule else None

    if rule == "required" and isinstance(rule_value, list) and isinstance(exc.value, Mapping):
        for required in rule_value:
            if required not in exc.value:
                return f'missing required property "{_join_key(path, str(required))}"'
    if rule == "additionalProperties":
        extra = _first_extra_key(exc.value, definition)
        if extra is not None:
            return f'property "{_join_key(path, extra)}" is not allowed'
    if rule == "type" and rule_value is not None:
        names = rule_value if isinstance(rule_value, list) else [rule_value]
        return f"{subject} must be {' or '.join(str(item) for item in names)}"
    if rule == "enum" and isinstance(rule_value, list):
        return f"{subject} must be one of {', '.join(format_json_value(v) for v in rule_value)}"
    if rule == "const":
        return f"{subject} must be equal to {format_json_value(rule_value)}"
    if rule in _COMPARISONS and isinstance(rule_value, (int, float, Decimal)):
        operator = _COMPARISONS[rule]
        # draft-04 spelled exclusive bounds as a boolean next to minimum/maximum
        if rule == "minimum" and definition.get("exclusiveMinimum") is True:
            operator = ">"
        if rule == "maximum" and definition.get("exclusiveMaximum") is True:
            operator = "<"
        return f"{subject} must be {operator} {format_json_value(rule_value)}"
    if rule == "multipleOf" and isinstance(rule_value, (int, float, Decimal)):
        return f"{subject} must be a multiple of {format_json_value(rule_value)}"
    if rule in _COUNTS and isinstance(rule_value, int):
        bound, unit, verb = _COUNTS[rule]
        return f"{subject} {verb} {bound} {rule_value} {unit}"
    if rule == "pattern" and isinstance(rule_value, str):
        return f"{subject} must match pattern {format_json_value(rule_value)}"
    if rule == "format" and isinstance(rule_value, str):
        return f"{subject} must be a valid {rule_value}"
    if rule == "uniqueItems":
        return f"{subject} must not contain duplicate items"
    if rule == "contains":
        return f'{subject} must contain an item matching the "contains" schema'
    if rule == "not":
        return f'{subject} must not match the "not" schema'
    if rule == "anyOf":
        return f'{subject} must match at least one of the "anyOf" schemas'
    if rule == "oneOf":
        return f'{subject} must match exactly one of the "oneOf" schemas'

    message = str(exc.message)
    if message.endswith("must not be there"):
        return f"{subject} is not allowed"
    name = exc.name or "data"
    rest = message[len(name) :].lstrip() if message.startswith(name) else message
    return f"{subject} {rest}"


def validate_tool_arguments(
    name: str, validator: Validator, args: Any, *, max_bytes: int | None = None
) -> dict[str, Any]:
    """Validate ``args`` for tool ``name``; return them as a fresh plain ``dict``.

    Order of checks: ``args`` must be a mapping (R68); then a pre-walk rejects nesting
    deeper than :data:`MAX_ARGUMENT_DEPTH`, non-string keys, non-finite numbers and
    values that are not JSON (sets, bytes, arbitrary objects) anywhere; then arguments
    whose compact JSON encoding exceeds ``max_bytes`` (default
    :data:`MAX_TOOL_ARGUMENT_BYTES`) are refused; then the
    compiled schema decides, in its own check order.  The returned dict is a deep copy
    made of dicts and lists, so a handler cannot alter the arguments other parties saw.
    Every failure is a :class:`CharivoValidationError`.
    """
    limit = MAX_TOOL_ARGUMENT_BYTES if max_bytes is None else max_bytes
    data = _flat_copy(args, limit)
    if data is None:
        data = _checked_copy(name, args, limit)
    try:
        validator(data)
    except fastjsonschema.JsonSchemaValueException as exc:
        prefix = _argument_prefix(name)
        raise CharivoValidationError(prefix + _describe(exc), cause=exc) from exc
    except fastjsonschema.JsonSchemaValuesException as exc:
        first = exc.errors[0] if exc.errors else None
        detail = _describe(first) if first is not None else str(exc)
        raise CharivoValidationError(_argument_prefix(name) + detail, cause=exc) from exc
    except Exception as exc:  # e.g. uniqueItems over unhashable values
        raise CharivoValidationError(
            _argument_prefix(name)
            + f"arguments could not be validated ({type(exc).__name__}: {exc})",
            cause=exc,
        ) from exc
    return data


def _argument_prefix(name: str) -> str:
    return f'Realtime tool "{name}" arguments failed schema validation: '


# Integers strictly between these bounds take at most 20 characters of JSON.
_SMALL_INT = 10**19


def _flat_copy(args: Any, limit: int) -> dict[str, Any] | None:
    """The usual arguments' copy, without the walk or the encoding: ``args`` is a plain
    dict with string keys whose values are strings, booleans, ``None``, finite floats
    or integers of at most 19 digits, and an upper bound of its compact JSON size is
    within ``limit``.  ``None`` for anything else (:func:`_checked_copy` decides)."""
    if type(args) is not dict:
        return None
    bound = 2
    for key, value in args.items():
        if type(key) is not str:
            return None
        kind = type(value)
        if kind is str:
            bound += 6 * len(value) + 2  # every character escaped as \uXXXX at most
        elif kind is bool or value is None:
            bound += 5
        elif kind is int:
            if not -_SMALL_INT < value < _SMALL_INT:
                return None
            bound += 20
        elif kind is float:
            if not math.isfinite(value):
                return None
            bound += 24  # the longest repr of a finite float
        else:
            return None
        bound += 6 * len(key) + 4  # the key's quotes, the colon and a comma
    if bound > limit:
        return None
    return dict(args)


def _checked_copy(name: str, args: Any, limit: int) -> dict[str, Any]:
    """The arguments' copy by the pre-walk, then their size (see
    :func:`validate_tool_arguments`)."""
    prefix = _argument_prefix(name)
    if not isinstance(args, Mapping):
        raise CharivoValidationError(prefix + "arguments must be an object")
    try:
        data: dict[str, Any] = _normalise(args, "", 0)
    except _Refused as refused:
        raise CharivoValidationError(prefix + str(refused.args[0])) from None
    except RecursionError:
        raise CharivoValidationError(prefix + "arguments are nested too deeply") from None
    except Exception as exc:  # a hostile mapping whose items() raises, ...
        raise CharivoValidationError(
            prefix + f"arguments could not be read ({type(exc).__name__}: {exc})", cause=exc
        ) from exc
    try:
        size = len(_ASCII_JSON.encode(data))  # never less than the UTF-8 size
        if size > limit:
            size = len(_UTF8_JSON.encode(data).encode("utf-8", "surrogatepass"))
    except ValueError as exc:  # an int beyond sys.get_int_max_str_digits()
        raise CharivoValidationError(
            prefix + f"arguments cannot be encoded as JSON ({exc})"
        ) from None
    if size > limit:
        raise CharivoValidationError(
            prefix + f"arguments are too large ({size} bytes of JSON; the limit is {limit})"
        )
    return data


# ------------------------------------------------------------------------- tool output


def _output_problem(value: Any, path: str, depth: int) -> str | None:
    kind = type(value)
    if kind is str or kind is bool or kind is int or value is None:  # the usual leaves
        return None
    where = f'property "{path}"'
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where} is not a finite number ({value!r})"
    if kind is dict or isinstance(value, Mapping):
        if depth >= MAX_ARGUMENT_DEPTH:
            return f"{where if path else 'the output'} is nested too deeply"
        for key, item in value.items():
            if not isinstance(key, str):
                owner = where if path else "the output"
                return f"{owner} has a key that is not a string ({key!r})"
            problem = _output_problem(item, _join_key(path, key), depth + 1)
            if problem is not None:
                return problem
        return None
    if isinstance(value, (list, tuple)):
        if depth >= MAX_ARGUMENT_DEPTH:
            return f"{where} is nested too deeply"
        for index, item in enumerate(value):
            problem = _output_problem(item, _join_index(path, index), depth + 1)
            if problem is not None:
                return problem
        return None
    return f"{where} has a type JSON cannot carry ({type(value).__name__})"


def check_tool_output(name: str, output: Any) -> Mapping[str, Any]:
    """Return ``output`` itself when it is a JSON-serialisable mapping (D17.9).

    That is: a mapping with string keys whose values are, recursively, mappings with
    string keys, lists/tuples, strings, finite ints/floats, booleans or ``None``.
    Otherwise raise :class:`CharivoValidationError` naming the offending path.
    """
    if type(output) is dict:  # the usual output: a flat dict of plain leaves
        for key, value in output.items():
            kind = type(value)
            if type(key) is not str or not (
                kind is str or kind is bool or kind is int or value is None
            ):
                break
        else:
            return output
    if not isinstance(output, Mapping):
        raise CharivoValidationError(f'Realtime tool "{name}" must return an object')
    try:
        problem = _output_problem(output, "", 0)
    except Exception as exc:  # a hostile mapping whose items() raises, ...
        problem = f"the output could not be read ({type(exc).__name__}: {exc})"
    if problem is not None:
        raise CharivoValidationError(
            f'Realtime tool "{name}" must return a JSON-serialisable object: {problem}'
        )
    return output


# ---------------------------------------------------------------------------- registry


def is_async_callable(fn: object) -> bool:
    """Whether calling ``fn`` gives a coroutine: an ``async def`` function or method,
    a ``functools.partial`` of one, or an object whose ``__call__`` is one."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - the class's own __call__
    return call is not None and not inspect.isfunction(fn) and inspect.iscoroutinefunction(call)


def _describe_callable(fn: object) -> str:
    if not callable(fn):
        return f"a {type(fn).__name__}, which is not callable"
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return f"the plain function {name}" if inspect.isfunction(fn) else f"{name}"


@attrs.frozen(slots=True)
class ToolEntry:
    """A registered tool with its compiled argument validator."""

    registration: RealtimeToolRegistration
    validator: Validator


_entries_seen: dict[int, ToolEntry] = {}


class ToolRegistry:
    """Tools keyed by ``definition.name``, in insertion order.

    Re-registering a name replaces the registration in its original position;
    unregistering and registering again moves it to the end.  The schema is compiled in
    :meth:`register`, so a bad schema is refused there and leaves the registry unchanged.
    """

    __slots__ = ("_definitions", "_entries")

    def __init__(self, registrations: Iterable[RealtimeToolRegistration] = ()) -> None:
        self._entries: dict[str, ToolEntry] = {}
        self._definitions: tuple[RealtimeTool, ...] | None = None
        for registration in registrations:
            self.register(registration)

    def register(self, registration: RealtimeToolRegistration) -> ToolEntry:
        if not isinstance(registration, RealtimeToolRegistration):
            raise CharivoValidationError(
                f"register expects a RealtimeToolRegistration (got {type(registration).__name__})"
            )
        definition = registration.definition
        entry = _entries_seen.get(id(registration))
        # A registration is immutable: one seen before has an async handler already.
        if (entry is None or entry.registration is not registration) and not is_async_callable(
            registration.handler
        ):
            raise CharivoValidationError(
                f'tool "{definition.name}": the handler must be an async function '
                f"(async def handler(args, context)); got "
                f"{_describe_callable(registration.handler)}. Run blocking code from "
                "an async handler with anyio.to_thread.run_sync."
            )
        validator = compile_schema(definition.parameters, definition.name)
        # A ToolEntry is immutable: registries holding the same registration with the
        # same compiled validator share one (thousands of managers, the same tools).
        if (
            entry is None
            or entry.registration is not registration
            or entry.validator is not validator
        ):
            entry = ToolEntry(registration=registration, validator=validator)
            _entries_seen[id(registration)] = entry
            while len(_entries_seen) > SCHEMA_CACHE_SIZE:
                _entries_seen.pop(next(iter(_entries_seen)), None)
        self._entries[definition.name] = entry
        self._definitions = None
        return entry

    def unregister(self, name: str) -> bool:
        if self._entries.pop(name, None) is None:
            return False
        self._definitions = None
        return True

    def get(self, name: str) -> ToolEntry | None:
        return self._entries.get(name)

    def definitions(self) -> tuple[RealtimeTool, ...]:
        """The tool definitions in registry order (cached until the registry changes)."""
        cached = self._definitions
        if cached is None:
            cached = tuple(entry.registration.definition for entry in self._entries.values())
            self._definitions = cached
        return cached

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def entries(self) -> tuple[ToolEntry, ...]:
        return tuple(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._entries))

    def __repr__(self) -> str:
        return f"ToolRegistry({list(self._entries)!r})"


# -------------------------------------------------------------------------- projectors


@attrs.frozen(slots=True)
class ProjectorContext:
    """What a result projector receives after a successful tool call.

    ``emit(event_name, payload)`` forwards to the manager's event emitter.
    """

    name: str
    output: Mapping[str, Any]
    call_id: str | None
    emit: Callable[[str, Any], None]


ResultProjector = Callable[[ProjectorContext], None]
