"""The baseline of ``python -m benchmarks``: the engine of an earlier commit, measured
in the same run as the working tree.

The machine the benchmarks run on is shared and noisy, so only figures measured in the
same run are compared: :func:`extract` takes the ``charivo_fsm`` package of a commit out
of the repository (``git archive``, no network, nothing in the working tree touched)
into a temporary directory, and :func:`run_once` runs one workload of either package in
a fresh process (:mod:`benchmarks.child`), with the same benchmark code. The runs of the
two are interleaved: current, baseline, current, baseline, ...
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# main when issue 12 (performance) was filed: "today" in its targets
DEFAULT = "839d7a2"


class RunFailed(RuntimeError):
    """A child process failed; the message ends with its stderr."""


def _git(*args: str) -> bytes:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, check=True).stdout


def extract(rev: str, into: Path) -> dict[str, str]:
    """Write the ``charivo_fsm`` package of commit ``rev`` into ``into`` (which then holds
    ``charivo_fsm/``); return the commit (short and full hash, date, subject)."""
    try:
        commit = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").decode().strip()
    except (OSError, subprocess.CalledProcessError) as error:
        raise SystemExit(
            f"--baseline {rev}: no such commit in this repository (a shallow clone? "
            "`git fetch --unshallow`), or git is missing; `--baseline none` runs without it"
        ) from error
    archive = _git("archive", "--format=tar", commit, "charivo_fsm")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    date, subject = _git("show", "-s", "--format=%cs%n%s", commit).decode().split("\n", 1)
    return {
        "rev": commit[:7],
        "commit": commit,
        "date": date,
        "subject": subject.strip(),
    }


def run_once(package: Path, workload: str, scale: int, f_seconds: float) -> dict[str, Any]:
    """One run of ``workload`` (a warm-up, then the measured run) of the ``charivo_fsm``
    under ``package``, in a fresh process; its figures (see :mod:`benchmarks.child`)."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.child",
        "--package",
        str(package),
        "--workload",
        workload,
        "--scale",
        str(scale),
        "--f-seconds",
        str(f_seconds),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RunFailed(
            f"workload {workload} of {package} failed ({done.returncode}):\n{done.stderr}"
        )
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(found["package"]) != package.resolve():
        raise RunFailed(f"workload {workload} measured {found['package']}, not {package}")
    return found
