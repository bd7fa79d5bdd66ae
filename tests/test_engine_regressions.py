"""Regressions found by the property suites and the soak."""

from __future__ import annotations

import anyio
import pytest

from charivo_fsm import CharivoStateError, SessionStatus, create_realtime_manager
from charivo_fsm.testing import FakeTransport, RecordingEmitter, settle

pytestmark = pytest.mark.anyio


async def test_d3_stop_during_start_shows_stopping_until_stopped(
    fake: FakeTransport, emitter: RecordingEmitter
) -> None:
    """D3/D14: once a stop has won over a start, the state says ``stopping`` (not a
    stale ``starting``) until the session is stopped."""
    connect = fake.gate("connect")
    disconnect = fake.gate("disconnect")
    async with create_realtime_manager(fake) as manager:
        manager.set_event_emitter(emitter)
        async with anyio.create_task_group() as tg:

            async def start() -> None:
                with pytest.raises(CharivoStateError):
                    await manager.start_session()

            tg.start_soon(start)
            await connect.wait_entered()
            tg.start_soon(manager.stop_session)
            await disconnect.wait_entered()
            assert manager.state.session.status == SessionStatus.STOPPING
            last = emitter.payloads("realtime:state")[-1].state
            assert last.session.status == SessionStatus.STOPPING
            disconnect.open()
            await settle()
        assert manager.state.session.status == SessionStatus.STOPPED
