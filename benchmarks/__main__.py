"""Run every `benchmarks/bench_*.py` (or those named on the command line) and print their results.

Each module exposes `main() -> dict`; results are written to benchmarks/results/<name>.json.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).parent


def run(names: list[str]) -> None:
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        result = module.main()
        path = out_dir / f"{name}.json"
        path.write_text(json.dumps(result, indent=2))
        print(f"{name}: results in {path}")


if __name__ == "__main__":
    wanted = sys.argv[1:] or sorted(p.stem for p in HERE.glob("bench_*.py"))
    run(wanted)
