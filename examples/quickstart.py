import anyio

from charivo_fsm import RealtimeTool, RealtimeToolRegistration, create_realtime_manager
from charivo_fsm.events import AssistantTextDelta, ToolCall
from charivo_fsm.testing import FakeTransport, RecordingEmitter, settle


async def describe_scene(args, context):
    return {"success": True, "scene": "Cafe", "speaker": context.character.name}


async def main() -> None:
    transport, events = FakeTransport(), RecordingEmitter()  # any transport / emitter
    tool = RealtimeTool(name="describeScene", description="Describe the scene.")
    tools = [RealtimeToolRegistration(definition=tool, handler=describe_scene)]
    async with create_realtime_manager(transport, tools=tools) as manager:
        manager.set_event_emitter(events)
        manager.set_character({"id": "hiyori", "name": "Hiyori", "voice": {"voice_id": "marin"}})
        await manager.start_session({"provider": "openai", "model": "gpt-realtime-mini"})
        await manager.update_session({"voice": "alloy"})  # patched in place
        transport.emit(AssistantTextDelta("Hello"))  # what a transport reports
        transport.emit(ToolCall(name="describeScene", args={}, call_id="call-1"))
        await settle()  # let the tool handler run
        print(manager.state.session.config.voice, manager.state.response.text)
        print(transport.calls_to("send_tool_result"))
    print(manager.state.session.status, events.names()[:2])


anyio.run(main)
