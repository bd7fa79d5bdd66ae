import anyio

from charivo_fsm import RealtimeToolContext, create_realtime_manager, tool
from charivo_fsm.events import AssistantTextDelta, ToolCall
from charivo_fsm.testing import FakeTransport, RecordingEmitter, settle


@tool(name="describeScene", description="Describe the scene.")
async def describe_scene(context: RealtimeToolContext) -> dict[str, object]:
    speaker = context.character.name if context.character else None
    return {"success": True, "scene": "Cafe", "speaker": speaker}


async def main() -> None:
    transport, events = FakeTransport(), RecordingEmitter()  # any transport / emitter
    async with create_realtime_manager(transport, tools=[describe_scene]) as manager:
        manager.set_event_emitter(events)
        manager.set_character({"id": "hiyori", "name": "Hiyori", "voice": {"voice_id": "marin"}})
        await manager.start_session({"provider": "openai", "model": "gpt-realtime-mini"})
        await manager.update_session({"voice": "alloy"})  # patched in place
        transport.emit(AssistantTextDelta("Hello"))  # what a transport reports
        transport.emit(ToolCall(name="describeScene", args={}, call_id="call-1"))
        await settle()  # let the tool handler run
        config = manager.state.session.config
        assert config is not None
        print(config.voice, manager.state.response.text)
        print(transport.calls_to("send_tool_result"))
    print(manager.state.session.status, events.names()[:2])


anyio.run(main)
