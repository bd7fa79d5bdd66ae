"""``charivo-fsm check``: run the semantic suite (tier 3) against the engine.

Each example is one driver program (see :mod:`charivo_fsm.testing.suite`) run
on asyncio (looptime) and on trio (``MockClock``), both on virtual time, with
every invariant of docs/invariants.md checked after every step.  The transport
is the built-in :class:`~charivo_fsm.testing.FakeTransport`, or the one a
``MODULE:FACTORY`` returns: a callable taking no argument and returning
``(transport, faults)``, where ``faults`` implements
:class:`~charivo_fsm.testing.TransportFaults` for that transport.

Exit status: 0 when every example passed, 1 on a violation (the shrunk
counterexample is printed as a step list), 2 on a usage problem.
"""

from __future__ import annotations

import importlib
import os
import random
import sys
import time
from typing import cast

from .suite import (
    BACKENDS,
    SuiteConfig,
    SuiteResult,
    TransportFactory,
    describe_invariants,
    fake_transport_factory,
    format_steps,
    run_suite,
)

__all__ = ["load_factory", "run_check"]


def load_factory(spec: str) -> TransportFactory:
    """Import ``MODULE:FACTORY`` (``FACTORY`` may be dotted: ``MODULE:Class.make``)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"--transport expects MODULE:FACTORY, got {spec!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: the current directory
    target: object = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"{spec} is not callable")
    return cast(TransportFactory, target)


def _report(result: SuiteResult) -> None:
    name = f"{result.backend:>7}"
    if result.ok:
        print(f"{name}: {result.examples} examples passed ({result.seconds:.1f}s)")
        return
    where = f"example {result.first_failure}" if result.first_failure else "a run"
    print(f"{name}: FAILED at {where} ({result.seconds:.1f}s)")
    violation = result.violation
    if violation is not None:
        print(f"  violated {violation}")
        print("  shrunk counterexample (each step runs, then the manager settles):")
        for line in format_steps(violation.steps).splitlines()[1:]:
            print("  " + line)
    if result.error is not None:
        print(f"  {type(result.error).__name__}: {result.error}")


def run_check(examples: int, seed: int | None, transport: str | None) -> int:
    """Run the suite; print the invariants, the example count and any counterexample."""
    try:
        import hypothesis  # noqa: F401
        import looptime  # noqa: F401
        import trio  # noqa: F401
    except ImportError as missing:
        print(
            f"charivo-fsm check needs the check extra ({missing.name} is missing): "
            "pip install 'charivo-fsm[check]'"
        )
        return 2
    if examples < 1:
        print("charivo-fsm check: --examples must be at least 1")
        return 2
    try:
        factory = load_factory(transport) if transport else fake_transport_factory
    except (ImportError, AttributeError, ValueError) as error:
        print(f"charivo-fsm check: cannot load the transport factory: {error}")
        return 2
    config = SuiteConfig()
    if seed is None:
        seed = random.randrange(2**32)
    print(
        f"charivo-fsm check: {examples} examples per backend "
        f"(asyncio with looptime, trio with MockClock), seed {seed}, "
        f"transport {transport or 'FakeTransport (built in)'}"
    )
    print(
        f"programs of up to {config.max_steps} steps; transport_timeout "
        f"{config.transport_timeout:g}s, reconnect_delays "
        f"{', '.join(f'{d:g}' for d in config.reconnect_delays)}s with jitter "
        f"±{config.reconnect_jitter:g} (virtual time)"
    )
    print("invariants checked after every step and after leaving `async with`:")
    for line in describe_invariants():
        print(f"  {line}")
    started = time.perf_counter()
    failed = False
    total = 0
    ran = 0
    for backend in BACKENDS:
        if failed:
            print(f"{backend:>7}: not run (fix the counterexample above first)")
            continue
        result = run_suite(
            backend=backend, examples=examples, seed=seed, factory=factory, config=config
        )
        ran += 1
        total += result.examples
        _report(result)
        failed = not result.ok
    outcome = "FAILED" if failed else "passed"
    print(
        f"{outcome}: {total} examples on {ran} backend{'s' if ran > 1 else ''} in "
        f"{time.perf_counter() - started:.1f}s (seed {seed})"
    )
    return 1 if failed else 0
