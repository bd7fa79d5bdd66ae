"""A tool the model can call, built from a typed async function.

Run it like examples/first_session.py (a real key, or the local server, whose model
calls get_weather whenever a message mentions the weather).
"""

import os
from typing import Annotated, Any, Literal

import anyio

from charivo_fsm import create_realtime_manager, tool
from charivo_fsm.transports.openai import OpenAIRealtimeTransport

URL = os.environ.get("CHARIVO_REALTIME_URL", "wss://api.openai.com/v1/realtime")


@tool(timeout=5.0)
async def get_weather(
    city: Annotated[str, "The city, e.g. Paris"],
    unit: Literal["celsius", "fahrenheit"] = "celsius",
) -> dict[str, Any]:
    """Tell the current weather in a city."""
    return {"success": True, "city": city, "temperature": 21, "unit": unit}


async def main() -> None:
    async with (
        OpenAIRealtimeTransport(model="gpt-realtime-mini", url=URL) as transport,
        create_realtime_manager(transport, tools=[get_weather]) as manager,
        manager.events() as events,
    ):
        await manager.start_session({"output_modalities": ["text"]})
        await manager.send_message("What's the weather in Paris?")
        async for event in events:
            match event:
                case ("realtime:tool:call", call):
                    print(f"tool call: {call.name} {dict(call.args)}")
                case ("realtime:tool:result", result):
                    print(f"tool result: {dict(result.output)}")
                case ("realtime:assistant:delta", delta):
                    print(delta.text, end="", flush=True)
                case ("realtime:assistant:done", done) if done.text:
                    print()
                    break


anyio.run(main)
