"""Tier 1: properties of the declared tables, for every machine.

* totality: every (state, trigger) pair, under every truth assignment of the
  guards, either moves to a declared state or is a refusal (``fire`` returns
  False and the state is unchanged) -- never an exception;
* every state is reachable from the initial state;
* every state has an exit to another state (none of these machines has a
  terminal state: a stopped session can start again);
* generated trigger paths cover every edge at least once.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charivo_fsm.machines import MACHINES, MachineSpec


class _StubCore:
    """Answers every guard from a table and records the effects run."""

    def __init__(self, guards: dict[str, bool]) -> None:
        self.guards = guards
        self.effects: list[str] = []

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)


def _stub_class(spec: MachineSpec) -> type:
    guard_names = {n for e in spec.edges for n in e.conditions + e.unless}
    effect_names = {n for e in spec.edges for n in e.effects}
    namespace: dict[str, Any] = {}
    for name in guard_names:
        namespace[name] = lambda self, _n=name: self.guards.get(_n, False)
    for name in effect_names:
        namespace[name] = lambda self, _n=name: self.effects.append(_n)
    return type(f"Stub{spec.name.title()}", (_StubCore,), namespace)


def _bound_copy(spec: MachineSpec) -> tuple[MachineSpec, type]:
    """A copy of ``spec`` bound to a stub core (the real one stays bound to Core)."""
    copy = MachineSpec(
        spec.name,
        spec.states,
        spec.initial,
        [
            {
                "trigger": e.trigger,
                "source": e.source,
                "dest": e.dest,
                "conditions": list(e.conditions),
                "unless": list(e.unless),
                "after": list(e.effects),
            }
            for e in spec.edges
        ],
        public=spec.public,
    )
    stub = _stub_class(copy)
    copy.bind(stub)
    return copy, stub


SPECS = {name: _bound_copy(spec) for name, spec in MACHINES.items()}


@pytest.mark.parametrize("name", sorted(MACHINES))
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_totality_legal_state_or_refusal(name: str, data: st.DataObject) -> None:
    spec, stub = SPECS[name]
    guard_names = sorted({n for e in spec.edges for n in e.conditions + e.unless})
    state = data.draw(st.sampled_from(spec.states), label="state")
    trigger = data.draw(st.sampled_from(spec.triggers), label="trigger")
    guards = {g: data.draw(st.booleans(), label=g) for g in guard_names}
    core = stub(guards)
    runner = spec.runner()
    runner.state = state
    taken = runner.fire(core, trigger)
    assert runner.state in spec.states
    if not taken:
        assert runner.state == state
        assert core.effects == []
        assert spec.refusal(state, trigger)  # a named refusal
    else:
        candidates = [e for e in spec.edges if e.source == state and e.trigger == trigger]
        expected = next(
            e
            for e in candidates
            if all(guards[g] for g in e.conditions) and not any(guards[g] for g in e.unless)
        )
        assert runner.state == (expected.dest if expected.dest is not None else state)
        assert core.effects == list(expected.effects)


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_every_state_is_reachable(name: str) -> None:
    spec = MACHINES[name]
    seen = {spec.initial}
    queue = deque([spec.initial])
    while queue:
        state = queue.popleft()
        for edge in spec.edges:
            if edge.source == state and edge.dest is not None and edge.dest not in seen:
                seen.add(edge.dest)
                queue.append(edge.dest)
    assert seen == set(spec.states)


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_every_state_has_an_exit(name: str) -> None:
    spec = MACHINES[name]
    for state in spec.states:
        assert any(
            e.source == state and e.dest is not None and e.dest != state for e in spec.edges
        ), f"{name}: {state} has no exit"


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_guarded_alternatives_are_exclusive_and_exhaustive(name: str) -> None:
    """Where several edges share (source, trigger), their guards partition the cases."""
    spec = MACHINES[name]
    groups: dict[tuple[str, str], list[Any]] = {}
    for edge in spec.edges:
        groups.setdefault((edge.source, edge.trigger), []).append(edge)
    for key, edges in groups.items():
        if len(edges) < 2:
            continue
        names = sorted({n for e in edges for n in e.conditions + e.unless})
        for bits in range(2 ** len(names)):
            truth = {n: bool(bits >> i & 1) for i, n in enumerate(names)}
            holding = [
                e
                for e in edges
                if all(truth[g] for g in e.conditions) and not any(truth[g] for g in e.unless)
            ]
            assert len(holding) == 1, (name, key, truth, holding)


@pytest.mark.parametrize("name", sorted(MACHINES))
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_random_paths_stay_legal(name: str, data: st.DataObject) -> None:
    spec, stub = SPECS[name]
    guard_names = sorted({n for e in spec.edges for n in e.conditions + e.unless})
    runner = spec.runner()
    for _ in range(data.draw(st.integers(1, 40))):
        trigger = data.draw(st.sampled_from(spec.triggers))
        guards = {g: data.draw(st.booleans()) for g in guard_names}
        runner.fire(stub(guards), trigger)
        assert runner.state in spec.states


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_generated_paths_cover_every_edge(name: str) -> None:
    """A breadth-first walk with guard assignments chosen per edge reaches every edge."""
    spec, stub = SPECS[name]
    # shortest trigger path to every state
    paths: dict[str, list[Any]] = {spec.initial: []}
    queue = deque([spec.initial])
    while queue:
        state = queue.popleft()
        for edge in spec.edges:
            if edge.source == state and edge.dest is not None and edge.dest not in paths:
                paths[edge.dest] = [*paths[state], edge]
                queue.append(edge.dest)
    covered = set()
    for index, edge in enumerate(spec.edges):
        runner = spec.runner()
        for step in [*paths[edge.source], edge]:
            guards = {g: True for g in step.conditions} | {g: False for g in step.unless}
            assert runner.fire(stub(guards), step.trigger), (name, step)
            assert runner.state == (step.dest if step.dest is not None else step.source)
        covered.add(index)
    assert covered == set(range(len(spec.edges)))
