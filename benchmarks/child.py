"""One run of one workload (a-f) in a fresh process, for ``python -m benchmarks``:
``python -m benchmarks.child --package DIR --workload a --scale 1 --f-seconds 10``.

``DIR`` holds the ``charivo_fsm`` package to measure (the working tree, or a baseline
commit's package extracted by :mod:`benchmarks.baseline`); it is put first on
``sys.path`` before anything imports ``charivo_fsm``, so the working tree's and the
baseline's packages never share an interpreter. The run is a warm-up at a tenth of the
size (1 s of real time for f), then the measured run; its figures are printed as one
line of JSON (the last line of stdout).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.child")
    parser.add_argument("--package", required=True, help="the directory holding charivo_fsm/")
    parser.add_argument("--workload", required=True, choices=list("abcdef"))
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--f-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    package = Path(args.package).resolve()
    if "charivo_fsm" in sys.modules:
        parser.error("charivo_fsm was imported before --package was put on sys.path")
    sys.path.insert(0, str(package))
    import charivo_fsm

    found = Path(charivo_fsm.__file__).resolve().parent.parent
    if found != package:
        parser.error(f"charivo_fsm was imported from {found}, not from {package}")

    from .bench import Bench, figures
    from .common import fresh_heap

    warm = Bench(scale=args.scale * 10, f_seconds=min(1.0, args.f_seconds))
    fresh_heap()
    getattr(warm, args.workload)(False)
    bench = Bench(scale=args.scale, f_seconds=args.f_seconds)
    fresh_heap()
    getattr(bench, args.workload)(True)
    print(json.dumps({"package": str(found), "rows": figures(bench), "extra": bench.extra}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
