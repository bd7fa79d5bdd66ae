"""The error family of charivo_fsm.

Every error the library raises, stores in ``state.last_error`` or emits in
``realtime:error`` / ``realtime:tool:error`` is a :class:`CharivoError`.  Each
subclass forces its own ``code`` so a JavaScript frontend can switch on it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

__all__ = [
    "CharivoError",
    "CharivoProviderError",
    "CharivoStateError",
    "CharivoTimeoutError",
    "CharivoTransportError",
    "CharivoValidationError",
    "ErrorKind",
    "to_charivo_error",
]

ErrorKind = Literal["state", "timeout", "transport", "provider", "validation"]


class CharivoError(Exception):
    """Base error.  ``str(e) == e.message``; ``cause`` is also ``__cause__``."""

    default_code: ClassVar[str] = "CHARIVO_ERROR"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.default_code
        self.cause = cause
        if cause is not None:
            self.__cause__ = cause

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r})"


class _FixedCodeError(CharivoError):
    """A subclass whose code cannot be overridden."""

    def __init__(self, message: str, *, cause: BaseException | None = None) -> None:
        super().__init__(message, code=self.default_code, cause=cause)


class CharivoStateError(_FixedCodeError):
    """An operation is not allowed in the current lifecycle state."""

    default_code = "CHARIVO_STATE_ERROR"


class CharivoTimeoutError(_FixedCodeError):
    """An operation exceeded its time bound."""

    default_code = "CHARIVO_TIMEOUT_ERROR"


class CharivoTransportError(_FixedCodeError):
    """The transport failed."""

    default_code = "CHARIVO_TRANSPORT_ERROR"


class CharivoProviderError(_FixedCodeError):
    """The provider answered with an error.

    ``provider_code``, ``provider_type`` and ``param`` keep the service's own
    error fields (for OpenAI Realtime: ``error.code`` such as
    ``"rate_limit_exceeded"``, ``error.type`` such as
    ``"invalid_request_error"`` and ``error.param``), ``None`` when absent, so
    an app can tell a rate limit from an invalid value or an expired session.
    ``code`` stays ``CHARIVO_PROVIDER_ERROR``.
    """

    default_code = "CHARIVO_PROVIDER_ERROR"

    def __init__(
        self,
        message: str,
        *,
        cause: BaseException | None = None,
        provider_code: str | None = None,
        provider_type: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message, cause=cause)
        self.provider_code = provider_code
        self.provider_type = provider_type
        self.param = param

    def __repr__(self) -> str:
        extra = "".join(
            f", {name}={value!r}"
            for name, value in (
                ("provider_code", self.provider_code),
                ("provider_type", self.provider_type),
                ("param", self.param),
            )
            if value is not None
        )
        return f"{type(self).__name__}({self.message!r}, code={self.code!r}{extra})"


class CharivoValidationError(_FixedCodeError):
    """Input (a config, a wire event, tool arguments or output) is malformed."""

    default_code = "CHARIVO_VALIDATION_ERROR"


_KINDS: dict[str, type[CharivoError]] = {
    "state": CharivoStateError,
    "timeout": CharivoTimeoutError,
    "transport": CharivoTransportError,
    "provider": CharivoProviderError,
    "validation": CharivoValidationError,
}


def _message_of(error: Any, fallback: str | None) -> str:
    if isinstance(error, str) and error.strip():
        return error
    if isinstance(error, BaseException):
        text = str(error)
        if text.strip():
            return text
    return fallback if fallback is not None else "Unknown error"


def to_charivo_error(kind: ErrorKind, error: Any, fallback: str | None = None) -> CharivoError:
    """Return ``error`` unchanged when it is a :class:`CharivoError`, else wrap it.

    The wrapper's class is chosen by ``kind``; its message is the string itself,
    the exception's message, ``fallback`` or ``"Unknown error"`` (other values are
    not stringified).  An exception becomes the wrapper's ``cause``.
    """
    if isinstance(error, CharivoError):
        return error
    try:
        cls = _KINDS[kind]
    except KeyError:
        raise CharivoValidationError(
            f"unknown error kind {kind!r}; expected one of {', '.join(_KINDS)}"
        ) from None
    cause = error if isinstance(error, BaseException) else None
    return cls(_message_of(error, fallback), cause=cause)
