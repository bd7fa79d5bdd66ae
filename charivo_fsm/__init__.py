"""charivo_fsm: a realtime voice/LLM session engine built from declared state machines."""

import logging as _logging

from .config import DEFAULT_REALTIME_AGENT_INSTRUCTIONS, build_realtime_session_config
from .errors import (
    CharivoError,
    CharivoProviderError,
    CharivoStateError,
    CharivoTimeoutError,
    CharivoTransportError,
    CharivoValidationError,
    to_charivo_error,
)
from .manager import RealtimeManager, create_realtime_manager
from .model import (
    Character,
    CharacterVoice,
    ConnectionState,
    RealtimeSessionConfig,
    RealtimeState,
    RealtimeTool,
    RealtimeToolContext,
    RealtimeToolRegistration,
    ResponseState,
    ResponseStatus,
    SessionState,
    SessionStatus,
    TurnDetection,
)
from .tools import ProjectorContext, ResultProjector
from .transport import RealtimeTransport, VoiceTransport
from .typed_tools import tool

_logging.getLogger("charivo_fsm").addHandler(_logging.NullHandler())

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_REALTIME_AGENT_INSTRUCTIONS",
    "Character",
    "CharacterVoice",
    "CharivoError",
    "CharivoProviderError",
    "CharivoStateError",
    "CharivoTimeoutError",
    "CharivoTransportError",
    "CharivoValidationError",
    "ConnectionState",
    "ProjectorContext",
    "RealtimeManager",
    "RealtimeSessionConfig",
    "RealtimeState",
    "RealtimeTool",
    "RealtimeToolContext",
    "RealtimeToolRegistration",
    "RealtimeTransport",
    "ResponseState",
    "ResponseStatus",
    "ResultProjector",
    "SessionState",
    "SessionStatus",
    "TurnDetection",
    "VoiceTransport",
    "build_realtime_session_config",
    "create_realtime_manager",
    "to_charivo_error",
    "tool",
]
