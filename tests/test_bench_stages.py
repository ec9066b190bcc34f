"""benchmarks/bench_stages: a small demo run by two copies of the kit, one with a stage slowed on purpose (a sleep
wrapped around the folds stage's function); the benchmark names that stage and exits non-zero."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.bench_stages import materialize

REPO = Path(__file__).resolve().parent.parent
SLEEP_S = 30  # well above the noise of a stage's time on a loaded machine


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.timeout(1800)  # two small demos, longer on a loaded machine
def test_bench_stages_names_the_stage_made_slower(tmp_path):
    base, new = tmp_path / "base", tmp_path / "new"
    materialize(str(REPO), base)
    materialize(str(REPO), new)
    folds = new / "kit" / "data" / "folds.py"
    folds.write_text(folds.read_text() + f"\n\n_make_folds = make_folds\n\n\ndef make_folds(*args, **kwargs):  # slowed on purpose\n"
                     f"    import time\n\n    time.sleep({SLEEP_S})\n    return _make_folds(*args, **kwargs)\n")
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_stages", "--base", str(base), "--new", str(new), "--variants", "cnn_demo",
         "--n-train", "200", "--n-test", "60", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=1800,
    )
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    stages = {r["stage"]: r for r in result["stages"]}
    print(done.stdout[-4000:])  # the table, shown when an assertion fails
    assert list(stages) == ["synth", "folds", "train", "calibrate", "blend", "score", "report", "submit"]  # make demo's kit lines
    assert "folds" in result["slower"] and stages["folds"]["new_median_s"] - stages["folds"]["base_median_s"] > SLEEP_S / 2
    assert all(len(r["base_s"]) == len(r["new_s"]) == 1 for r in result["stages"])
    assert "slower stages:" in done.stdout and "folds" in done.stdout.split("slower stages:")[1]
