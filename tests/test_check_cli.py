"""``charivo-fsm check``: the semantic suite from the command line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from charivo_fsm.cli import main
from charivo_fsm.testing import INVARIANTS


def test_check_passes_and_names_every_invariant(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--examples", "10", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    for invariant in INVARIANTS:
        assert f"[{invariant.rule}] {invariant.name}: " in out
    assert "asyncio: " in out and "trio: " in out
    assert "examples passed" in out
    assert out.rstrip().splitlines()[-1].startswith("passed: ")
    assert "seed 1" in out


def test_check_prints_a_random_seed_to_reproduce(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--examples", "2"]) == 0
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert "(seed " in last


def test_check_runs_a_transport_factory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "my_transport.py").write_text(
        textwrap.dedent(
            """
            from charivo_fsm.testing import FakeTransport, FakeTransportFaults

            made = []

            def make():
                fake = FakeTransport()
                made.append(fake)
                return fake, FakeTransportFaults(fake)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert (
        main(["check", "--examples", "5", "--seed", "2", "--transport", "my_transport:make"]) == 0
    )
    out = capsys.readouterr().out
    assert "transport my_transport:make" in out
    import my_transport  # type: ignore[import-not-found]

    assert len(my_transport.made) >= 10  # one fresh transport per program, both backends


@pytest.mark.parametrize("spec", ["nocolon", "charivo_fsm.testing:nothing", "no_such_module:x"])
def test_check_refuses_a_bad_factory(spec: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--examples", "1", "--transport", spec]) == 2
    assert "cannot load the transport factory" in capsys.readouterr().out


def test_check_fails_with_a_shrunk_counterexample(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A planted bug (an error event stores the raw exception) fails with exit status 1."""
    from charivo_fsm import core
    from charivo_fsm.events import ErrorEvent

    handle = core._EVENT_HANDLERS[ErrorEvent]

    def raw_error(self: core.Core, event: ErrorEvent) -> None:
        handle(self, event)
        self._last_error = event.error  # type: ignore[assignment]

    monkeypatch.setitem(core._EVENT_HANDLERS, ErrorEvent, raw_error)
    assert main(["check", "--examples", "200", "--seed", "1"]) == 1
    out = capsys.readouterr().out
    assert "asyncio: FAILED at example" in out
    assert "violated [D11] error_event_ends_the_audio: " in out
    assert "shrunk counterexample" in out
    assert "1. [t=0] " in out
    assert "transport emits ErrorEvent(RuntimeError('provider error'))" in out
    assert "trio: not run" in out
    assert out.rstrip().splitlines()[-1].startswith("FAILED: ")


OPENAI = "charivo_fsm.testing.suite_openai:openai_transport_factory"


def test_check_passes_over_the_openai_transport_and_the_local_server(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check", "--examples", "20", "--seed", "1", "--transport", OPENAI]) == 0
    out = capsys.readouterr().out
    assert f"transport {OPENAI}" in out
    assert out.rstrip().splitlines()[-1].startswith("passed: ")

