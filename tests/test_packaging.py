"""The distribution: build the sdist and the wheel, install the wheel into a fresh venv.

The wheel is built from the sdist (``python -m build`` does that), so a file missing
from the sdist fails here too.  The fresh venv gets the wheel and its runtime
dependencies from the configured package index; every public module is imported from
it (outside the source tree) and ``charivo-fsm --help`` runs.  Then the ``web``,
``remote`` and ``check`` extras are added and the modules that need them are imported.

Offline (the index cannot be reached), the wheel is installed without dependencies and
the fresh venv borrows them from the test environment through a ``.pth`` file; the
package itself still comes from the wheel (checked).
"""

from __future__ import annotations

import email
import re
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

import charivo_fsm

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.packaging

# Modules that need an extra: (module prefix, extra).
NEEDS_EXTRA = {"charivo_fsm.web": "web"}
PUBLIC_TOP_LEVEL = [
    "charivo_fsm",
    "charivo_fsm.events",
    "charivo_fsm.wire",
    "charivo_fsm.testing",
    "charivo_fsm.transports.openai",
    "charivo_fsm.diagrams",
    "charivo_fsm.server",
    "charivo_fsm.remote",
    "charivo_fsm.web",
]

# What pip says when the index cannot be reached.
OFFLINE_SIGNS = (
    "Could not find a version",
    "No matching distribution",
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Network is unreachable",
)

IMPORT_ALL = r"""
import importlib, json, pkgutil, sys
import charivo_fsm
skip = set(sys.argv[1:])
names = ["charivo_fsm"]
for info in pkgutil.walk_packages(charivo_fsm.__path__, "charivo_fsm."):
    if info.name.endswith("__main__") or any(
        info.name == s or info.name.startswith(s + ".") for s in skip
    ):
        continue
    names.append(info.name)
files = {}
for name in names:
    files[name] = importlib.import_module(name).__file__
print(json.dumps({"version": charivo_fsm.__version__, "files": files}))
"""


def run(*args: str | Path, cwd: Path | None = None, timeout: float = 120) -> str:
    result = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} exited {result.returncode}\n"
            f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
        )
    return result.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT, timeout=180)
    return out


def only(directory: Path, pattern: str) -> Path:
    (found,) = directory.glob(pattern)
    return found


def test_wheel_and_sdist_carry_the_metadata_and_files(dist: Path) -> None:
    version = charivo_fsm.__version__
    wheel = only(dist, "charivo_fsm-*.whl")
    sdist = only(dist, "charivo_fsm-*.tar.gz")
    assert wheel.name == f"charivo_fsm-{version}-py3-none-any.whl"
    assert sdist.name == f"charivo_fsm-{version}.tar.gz"

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = email.message_from_bytes(
            archive.read(f"charivo_fsm-{version}.dist-info/METADATA")
        )
    assert f"charivo_fsm-{version}.dist-info/licenses/LICENSE" in names
    assert "charivo_fsm/py.typed" in names
    assert "charivo_fsm/typed_tools.py" in names
    assert any(name.startswith("charivo_fsm/web/static/") for name in names)
    assert not any("__pycache__" in name for name in names)
    assert not any(name.startswith(("tests/", "docs/")) for name in names)

    assert metadata["Name"] == "charivo-fsm"
    assert metadata["Version"] == version
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Requires-Python"] == ">=3.11"
    classifiers = metadata.get_all("Classifier") or []
    assert "Typing :: Typed" in classifiers
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert metadata.get_all("Project-URL")
    # The long description is the README with its relative links made absolute.
    description = metadata.get_payload()
    assert isinstance(description, str) and description.startswith("# charivo-fsm")
    targets = re.findall(r"\]\(([^)\s]+)\)", description)
    assert targets and all(re.match(r"[a-z][a-z0-9+.-]*:|#", target) for target in targets), [
        target for target in targets if not re.match(r"[a-z][a-z0-9+.-]*:|#", target)
    ]
    extras = set(metadata.get_all("Provides-Extra") or [])
    assert {"web", "remote", "check", "docs", "dev", "test"} <= extras
    requires = metadata.get_all("Requires-Dist") or []
    runtime = sorted(
        re.split(r"[<>=!~ ;\[]", item, maxsplit=1)[0] for item in requires if "extra ==" not in item
    )
    assert runtime == ["anyio", "attrs", "cattrs", "fastjsonschema", "transitions", "wsproto"]
    check = [item for item in requires if 'extra == "check"' in item]
    assert not any(tool in item for item in check for tool in ("mypy", "ruff", "openai"))

    with tarfile.open(sdist) as archive:
        members = {Path(name).relative_to(f"charivo_fsm-{version}").as_posix()
                   for name in archive.getnames() if name != f"charivo_fsm-{version}"}
    for needed in ("LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml",
                   "charivo_fsm/__init__.py", "charivo_fsm/py.typed", "tests/conftest.py"):
        assert needed in members, needed


def fresh_venv(where: Path) -> Path:
    run(sys.executable, "-m", "venv", "--without-pip", where)
    return where / "bin" / "python"


def pip_install(python: Path, *args: str | Path) -> None:
    run(sys.executable, "-m", "pip", "--python", python, "install", "-q",
        "--disable-pip-version-check", *args, timeout=240)


def borrow_dependencies(python: Path) -> None:
    """Offline: let the fresh venv import the test environment's installed packages."""
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    here = sysconfig.get_paths()["purelib"]
    Path(site.strip(), "_borrowed_dependencies.pth").write_text(here + "\n")


def import_all(python: Path, cwd: Path, *skip: str) -> dict[str, str]:
    import json

    output = run(python, "-c", IMPORT_ALL, *skip, cwd=cwd)
    report: dict[str, object] = json.loads(output)
    assert report["version"] == charivo_fsm.__version__
    files = report["files"]
    assert isinstance(files, dict)
    return files


def test_the_wheel_installs_into_a_fresh_venv(dist: Path, tmp_path: Path) -> None:
    wheel = only(dist, "charivo_fsm-*.whl")
    venv = tmp_path / "venv"
    python = fresh_venv(venv)
    outside = tmp_path / "elsewhere"  # not the source tree: imports come from the venv
    outside.mkdir()
    try:
        pip_install(python, wheel)
        online = True
    except AssertionError as failure:
        if not any(sign in str(failure) for sign in OFFLINE_SIGNS):
            raise
        pip_install(python, "--no-deps", wheel)
        borrow_dependencies(python)
        online = False

    skip = [] if not online else list(NEEDS_EXTRA)
    files = import_all(python, outside, *skip)
    site = str(venv)
    for name, file in files.items():
        assert file.startswith(site), f"{name} was imported from {file}, not the fresh venv"
    expected = [name for name in PUBLIC_TOP_LEVEL if name not in skip]
    assert set(expected) <= set(files)

    help_text = run(venv / "bin" / "charivo-fsm", "--help", cwd=outside)
    for command in ("demo", "diagrams", "check", "web", "serve"):
        assert command in help_text
    assert "charivo-fsm" in run(python, "-m", "charivo_fsm", "--help", cwd=outside)
    if online:
        # `make demo` installs no extra: the demo runs on the runtime dependencies alone.
        assert "demo passed" in run(venv / "bin" / "charivo-fsm", "demo", cwd=outside)

    if online:
        # The modules behind the extras, once the extras are installed.
        pip_install(python, f"{wheel}[web,remote,check]")
        files = import_all(python, outside)
        assert set(PUBLIC_TOP_LEVEL) <= set(files)
        assert all(file.startswith(site) for file in files.values())
        run(python, "-c", "import hypothesis, trio, looptime, httpx, starlette, uvicorn")


def test_make_demo_installs_no_extra() -> None:
    commands = run("make", "-n", "-B", "demo", "PYTHON=python3", "VENV=/nonexistent", cwd=ROOT)
    installs = [line for line in commands.splitlines() if " install " in line]
    assert any(line.endswith("install -q -e .") for line in installs), commands
    assert not any("[" in line for line in installs), installs
