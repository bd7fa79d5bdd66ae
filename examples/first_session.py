"""A first session: the OpenAI Realtime API, text in, the streamed answer out.

Run it with OPENAI_API_KEY set; or, without a key, against the local server
(`charivo-fsm serve --port 8765`) by setting CHARIVO_REALTIME_URL to the URL it prints
and OPENAI_API_KEY to the key it prints.
"""

import os

import anyio

from charivo_fsm import create_realtime_manager
from charivo_fsm.transports.openai import OpenAIRealtimeTransport

URL = os.environ.get("CHARIVO_REALTIME_URL", "wss://api.openai.com/v1/realtime")


async def main() -> None:
    async with (
        OpenAIRealtimeTransport(model="gpt-realtime-mini", url=URL) as transport,
        create_realtime_manager(transport) as manager,
        manager.events() as events,
    ):
        await manager.start_session(
            {"instructions": "You are a friendly guide.", "output_modalities": ["text"]}
        )
        await manager.send_message("Say hello in five words.")
        async for event in events:
            match event:
                case ("realtime:assistant:delta", delta):
                    print(delta.text, end="", flush=True)
                case ("realtime:assistant:done", _):
                    print()
                    break
    print("session:", manager.state.session.status)


anyio.run(main)
