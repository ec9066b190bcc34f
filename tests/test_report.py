"""`kit report`: one static HTML file, nothing fetched from outside, holding the numbers the stages wrote."""

from __future__ import annotations

import json
import re

from rich.console import Console

from kit.leaderboard.ledger import COLUMNS, claim_entry, ledger_path
from kit.stages.blend import blend
from kit.stages.calibrate import calibrate
from kit.stages.report import report
from tests.test_blend import _stage_setup


def test_report_is_one_self_contained_html_file_with_the_stages_numbers(tmp_path):
    cfg, _ = _stage_setup(tmp_path)
    quiet = Console(file=open("/dev/null", "w"))
    calibrate(cfg, [cfg.paths.oof / "v1.npz"], quiet)
    csv = blend(cfg, ["v1", "v2"], "r", console=quiet)
    meta = json.loads(csv.with_suffix(".json").read_text())
    entry = dict.fromkeys(COLUMNS, "")
    entry.update(file=str(csv), time="2026-01-01 00:00:00", status="COMPLETE", public_score="-3.1", nested_cv_score=str(meta["nested_cv_score"]),
                 nested_cv_se="0.1", trivial_baseline=str(meta["trivial_baseline"]))
    claim_entry(ledger_path(cfg.paths.submissions), entry, None)
    before = set(tmp_path.rglob("*"))
    out = report(cfg, console=quiet)
    assert out == cfg.paths.submissions / "report.html" and set(tmp_path.rglob("*")) - before == {out}  # one file
    text = out.read_text()
    images = re.findall(r"<img[^>]*>", text)
    assert len(images) >= 5 and all("src='data:image/png;base64," in i for i in images)
    outside = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)
    for ref in ("http://", "https://", "//", "href=", "url(", "@import", "<script", "<link"):
        assert ref not in outside, ref
    assert outside.count("src=") == outside.count("src=''") == len(images)  # every src was an embedded PNG
    calibration = json.loads((cfg.paths.oof / "v1.calibration.json").read_text())
    for row in calibration["rows"]:
        assert f"{row['nested_cv']:+.4f} ± {row['se']:.4f}" in text
    assert f"{calibration['trivial_baseline']['nested_cv']:+.4f}" in text
    assert f"{meta['nested_cv_score']:+.4f} ± {meta['nested_cv_se']:.4f}" in text and "Leaderboard vs nested CV" in text and "-3.1" in text
    assert "Per-class recall" in text
