"""Diagrams are generated from the declared machines and diagrams/ is up to date."""

from __future__ import annotations

from pathlib import Path

import pytest

from charivo_fsm import diagrams
from charivo_fsm.cli import main
from charivo_fsm.machines import MACHINES

ROOT = Path(__file__).resolve().parents[1]


def test_committed_diagrams_are_up_to_date() -> None:
    assert diagrams.check(ROOT / "diagrams") == [], "run: charivo-fsm diagrams"


@pytest.mark.parametrize("fmt", sorted(diagrams.FORMATS))
def test_every_edge_appears_with_its_guards_and_effects(fmt: str) -> None:
    for spec in MACHINES.values():
        text = diagrams.render(spec, fmt)
        for edge in spec.edges:
            assert diagrams.edge_label(edge) in text
        for state in spec.states:
            assert state in text


def test_labels_show_guards_and_effects() -> None:
    text = diagrams.mermaid(MACHINES["connection"])
    assert "recovering --> backoff: recover_failed [attempts_left] / retry_recover" in text
    assert "recovering --> error: recover_failed [not attempts_left] / exhaust_reconnect" in text


def test_cli_check_fails_on_a_stale_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["diagrams", "--out", str(tmp_path)]) == 0
    assert main(["diagrams", "--out", str(tmp_path), "--check"]) == 0
    (tmp_path / "session.mmd").write_text("stateDiagram-v2\n", encoding="utf-8")
    assert main(["diagrams", "--out", str(tmp_path), "--check"]) == 1
    assert "session.mmd" in capsys.readouterr().out


def test_cli_single_format(tmp_path: Path) -> None:
    assert main(["diagrams", "--format", "dot", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{name}.dot" for name in MACHINES] + ["README.md"]
    )
    assert (tmp_path / "refresh.dot").read_text(encoding="utf-8").startswith("digraph refresh {")


@pytest.mark.parametrize("name", ["session", "connection"])
def test_readme_shows_the_current_session_and_connection_diagrams(name: str) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "```mermaid\n" + diagrams.mermaid(MACHINES[name]) + "```" in readme
