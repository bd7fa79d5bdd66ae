"""The declared machines: inspectable, compiled from the declaration, cheap per manager."""

from __future__ import annotations

import sys

import pytest
from transitions import Machine

from charivo_fsm import ConnectionState, ResponseStatus, SessionStatus
from charivo_fsm.core import Core
from charivo_fsm.machines import MACHINES, SESSION, MachineSpec, Runner


def test_five_machines_are_declared_with_transitions() -> None:
    assert set(MACHINES) == {"session", "connection", "refresh", "response", "audio"}
    for spec in MACHINES.values():
        assert isinstance(spec.machine, Machine)
        assert spec.machine.auto_transitions is False
        assert spec.edges, spec.name


def test_public_values_match_the_state_enums() -> None:
    assert {SessionStatus(v) for v in MACHINES["session"].public.values()} == set(SessionStatus)
    assert {ConnectionState(v) for v in MACHINES["connection"].public.values()} == set(
        ConnectionState
    )
    assert {ResponseStatus(v) for v in MACHINES["response"].public.values()} == set(ResponseStatus)


def test_every_guard_and_effect_names_a_core_method() -> None:
    for spec in MACHINES.values():
        for name in spec.names():
            assert callable(getattr(Core, name, None)), (spec.name, name)


def test_binding_refuses_a_core_without_the_callbacks() -> None:
    spec = MachineSpec(
        "probe",
        states=["a", "b"],
        initial="a",
        transitions=[{"trigger": "go", "source": "a", "dest": "b", "after": ["missing"]}],
    )
    with pytest.raises(TypeError, match="missing"):
        spec.bind(Core)


def test_edges_carry_guards_and_effects() -> None:
    lost = [e for e in MACHINES["connection"].edges if e.trigger == "lost"]
    assert any(e.source == "connected" and e.dest == "backoff" for e in lost)
    recover_failed = [e for e in MACHINES["connection"].edges if e.trigger == "recover_failed"]
    assert recover_failed[0].conditions == ("attempts_left",)
    assert recover_failed[0].effects == ("retry_recover",)
    stop = [e for e in SESSION.edges if e.trigger == "stop" and e.source == "starting"]
    assert stop[0].dest == "cancelling" and stop[0].effects == ("cancel_start",)


class _Probe:
    def __init__(self) -> None:
        self.log: list[str] = []
        self.allow = True

    def ok(self) -> bool:
        return self.allow

    def effect(self) -> None:
        self.log.append("effect")


def test_runner_takes_the_first_candidate_whose_guards_hold_and_refuses_others() -> None:
    spec = MachineSpec(
        "probe",
        states=["a", "b", "c"],
        initial="a",
        transitions=[
            {
                "trigger": "go",
                "source": "a",
                "dest": "b",
                "conditions": ["ok"],
                "after": ["effect"],
            },
            {"trigger": "go", "source": "a", "dest": "c"},
        ],
    )
    spec.bind(_Probe)
    probe = _Probe()
    runner = spec.runner()
    assert runner.fire(probe, "go") is True
    assert runner.state == "b" and probe.log == ["effect"]
    assert runner.fire(probe, "go") is False  # refused: nothing declared for (b, go)
    assert runner.state == "b"
    probe.allow = False
    other = spec.runner()
    assert other.fire(probe, "go") and other.state == "c"
    assert other.fire(probe, "nope") is False


def test_a_runner_is_two_slots_not_a_machine() -> None:
    runner = SESSION.runner()
    assert isinstance(runner, Runner)
    assert not hasattr(runner, "__dict__")
    assert sys.getsizeof(runner) < 100
