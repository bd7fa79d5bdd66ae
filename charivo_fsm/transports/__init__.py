"""Real transports for :class:`~charivo_fsm.RealtimeManager`.

* :mod:`charivo_fsm.transports.openai` — :class:`OpenAIRealtimeTransport`, the
  OpenAI Realtime API (GA interface) over a WebSocket, on asyncio and trio.

The modules are imported on demand, so ``import charivo_fsm`` never pulls in
the WebSocket stack.
"""
