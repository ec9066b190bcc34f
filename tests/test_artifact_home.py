"""kit.paths owns every artifact's name and kit.records every JSON record: one spelling of each file name, records
written as the same bytes as the dicts they replace, and a damaged record is one line naming the file and key."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import pytest

from kit.config import CompetitionConfig, name_problem
from kit.errors import KitError
from kit.files import write_json
from kit.paths import (
    RESERVED_NAMES,
    RESERVED_SUFFIXES,
    artifact_at,
    blend_oof_npz,
    calibration_json,
    decision_json,
    doctor_json,
    ledger_csv,
    oof_npz,
    owned_by_another,
    provenance_json,
    run_dir,
    submission_csv,
    submission_picture,
)
from kit.records import CalibrationReport, DoctorReport, OofMeta, Record, read_blend_provenance

ROOT = Path(__file__).resolve().parents[1]


def _calibration(**overrides) -> dict:
    row = {"key": "trivial", "label": "trivial", "nested_cv": np.float64(-3.5), "se": 0.1, "per_fold": [-3.0, -4.0],
           "delta_to_best": 0.5, "delta_se": 0.05, "chosen": False}
    report = {
        "target": "v1", "task": "multi-class", "metric": {"name": "weighted", "weights": [1, 2]}, "n_folds": 2, "fitted_on": "abc",
        "selection": "one SE", "rows": [row], "in_sample": {"trivial": -3.4}, "nested_cv": {"trivial": -3.5},
        "trivial_baseline": {"nested_cv": -3.5, "se": 0.1}, "chosen": "trivial", "chosen_nested_cv": -3.5, "best": "trivial",
        "temperature": np.float64(1.25), "alpha": 0.5, "fitted_per_fold": {"0": {"trivial": {"temperature": 1.0, "offsets": None}}},
        "storage": "sqlite:///oof/optuna.db", "study": "calibrate/v1", "a_key_of_a_newer_kit": [1, 2],
    }
    return {**report, **overrides}


def test_a_record_writes_the_bytes_of_the_dict_it_replaces(tmp_path):
    """Key order (extra keys included, nested records too), numpy floats and integers written as before."""
    data = _calibration()
    write_json(tmp_path / "dict.json", data)
    CalibrationReport.parse(data, "x").write(tmp_path / "record.json")
    assert (tmp_path / "record.json").read_bytes() == (tmp_path / "dict.json").read_bytes()
    doctor = {"machine": {"device": "cpu"}, "data": {"n_train": 10, "n_test": 4, "n_classes": 2, "n_folds": 2}, "compile_probe": {"works": None},
              "variants": {"v": {"backbone": "cnn", "batch_size": 8, "epochs": 1, "epoch_images_per_s": np.float32(12.5),
                                 "inference_images_per_s": 40.0, "memory": {"fits": True}}}}
    write_json(tmp_path / "doctor_dict.json", doctor)
    DoctorReport.parse(doctor, "x").write(tmp_path / "doctor_record.json")
    assert (tmp_path / "doctor_record.json").read_bytes() == (tmp_path / "doctor_dict.json").read_bytes()
    meta = {"blend": "b", "variants": ["a"], "metric": {"name": "m"}}  # "metric" is typed, yet stays where it was given
    OofMeta.parse(meta, "x").write(tmp_path / "meta.json")
    assert list(json.loads((tmp_path / "meta.json").read_text())) == ["blend", "variants", "metric"]


@pytest.mark.parametrize(("damage", "expected"), [
    (lambda d: d.pop("chosen_nested_cv"), "no key 'chosen_nested_cv'"),
    (lambda d: d["rows"][0].pop("se"), "no key 'rows.0.se'"),
    (lambda d: d.update(n_folds="five"), "key 'n_folds': Input should be a valid integer"),
])
def test_a_record_missing_a_key_is_one_line_naming_the_file_and_the_key(tmp_path, damage, expected):
    data = _calibration()
    damage(data)
    path = tmp_path / "v1.calibration.json"
    write_json(path, data)
    with pytest.raises(KitError) as err:
        CalibrationReport.read(path)
    text = str(err.value)
    assert text.startswith(f"{path}: {expected}") and "`kit calibrate`" in text and "\n" not in text


def test_a_truncated_or_foreign_record_is_one_line(tmp_path):
    path = tmp_path / "doctor.json"
    path.write_text('{"machine": {"device": "cpu"}, "data": {"n_tr')
    with pytest.raises(KitError, match=r"doctor.json: not valid JSON .*truncated.*`kit doctor`"):
        DoctorReport.read(path)
    path.write_text("[1, 2]")
    with pytest.raises(KitError, match="expected a JSON object"):
        DoctorReport.read(path)
    assert DoctorReport.read_if_exists(tmp_path / "absent.json") is None
    foreign = tmp_path / "notes.json"
    foreign.write_text('{"hello": 1}')
    assert read_blend_provenance(foreign) is None  # another JSON in submissions/ is not a blend's


def _cfg(tmp_path) -> CompetitionConfig:
    return CompetitionConfig.model_validate({
        "paths": {"oof": str(tmp_path / "oof"), "runs": str(tmp_path / "runs"), "submissions": str(tmp_path / "sub")},
        "folds": {"path": str(tmp_path / "folds.csv")}, "calibrate": {"storage": f"sqlite:///{tmp_path}/oof/optuna.db"},
    })


def test_every_artifact_is_owned_by_the_stage_that_writes_it(tmp_path):
    cfg = _cfg(tmp_path)
    owners = {
        oof_npz(cfg, "v1"): "kit train", oof_npz(cfg, "v1").with_suffix(".json"): "kit train",
        calibration_json(oof_npz(cfg, "v1")): "kit calibrate", decision_json(oof_npz(cfg, "v1")): "kit calibrate",
        blend_oof_npz(cfg, "b"): "kit blend", decision_json(blend_oof_npz(cfg, "b")): "kit blend",
        tmp_path / "oof" / "optuna.db": "kit calibrate", tmp_path / "oof" / "optuna.db.lock": "kit calibrate",
        run_dir(cfg, "v1", 0) / "preds.npz": "kit train", doctor_json(cfg): "kit doctor",
        submission_csv(cfg, "b"): "kit blend", provenance_json(submission_csv(cfg, "b")): "kit blend",
        submission_picture(cfg, "b", "confusion"): "kit blend", ledger_csv(cfg.paths.submissions): "kit submit",
        tmp_path / "folds.csv": "kit folds", tmp_path / "runs" / "timings.jsonl": "kit timings",
    }
    for path, stage in owners.items():
        assert artifact_at(path, cfg).stage == stage, path
    assert artifact_at(tmp_path / "elsewhere" / "out.html", cfg) is None
    assert artifact_at(tmp_path / "sub" / "report.html", cfg).stage == "kit report"
    assert owned_by_another(tmp_path / "sub" / "report.html", cfg, "kit report") is None
    assert "ledger" in str(owned_by_another(ledger_csv(cfg.paths.submissions), cfg, "kit report"))


def test_names_the_kit_writes_are_reserved_for_variants_and_blends():
    for name in RESERVED_NAMES:
        assert name_problem(name) is not None
    for suffix in RESERVED_SUFFIXES:
        assert name_problem(f"v{suffix}") is not None
    assert name_problem("v1") is None


ARTIFACT_NAMES = re.compile(r"\.calibration|\.decision|\.per_class|_confusion|_reliability|_per_class|ledger\.csv|preds\.npz|last\.pt|best\.pt"
                            r"|doctor\.json|timings\.jsonl|report\.html(?!\.j2)|cv_vs_public|metrics\.csv|curves\.png|job\.json|optuna(?!-dashboard)|\.previous|blend_|^\.seed$")


def test_file_names_under_oof_runs_and_submissions_are_spelled_only_in_kit_paths():
    """No string in the code of kit/ outside kit/paths.py is (a piece of) an artifact's file name: a literal or an
    f-string piece without spaces holding one, or a bare extension (f"{variant}.npz"; the data sources' own files
    in kit/data are not artifacts). Docstrings, messages and help texts (words) may mention them."""
    offenders = []
    for path in sorted((ROOT / "kit").rglob("*.py")):
        if path.name == "paths.py":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                      and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
        pieces = {id(value) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for value in node.values}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                bare_extension = (id(node) in pieces and re.fullmatch(r"\.(npz|jsonl?|csv|png|pt)", node.value)  # f"{v}.npz"
                                  and path.parent.name != "data")
                if not re.search(r"\s", node.value) and (ARTIFACT_NAMES.search(node.value) or bare_extension):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not offenders, "\n".join(offenders)


def test_record_is_the_base_of_every_record():
    for record in (CalibrationReport, DoctorReport, OofMeta):
        assert issubclass(record, Record)


def test_the_report_escapes_what_the_records_hold_and_refuses_a_damaged_one(tmp_path):
    """kit report renders through jinja2 with autoescape: text from a record never becomes markup."""
    from rich.console import Console

    from kit.stages.report import report

    cfg = _cfg(tmp_path)
    path = calibration_json(oof_npz(cfg, "v1"))
    write_json(path, _calibration(selection="<script>alert(1)</script> & more"))
    out = report(cfg, console=Console(file=open("/dev/null", "w")))
    text = out.read_text()
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in text
    assert text.count("<img alt='' src='data:image/png;base64,") == 2 and "font-family:system-ui,-apple-system,'Segoe UI'" in text
    write_json(path, _calibration(rows=[{"key": "trivial", "nested_cv": -3.5}]))
    with pytest.raises(KitError, match=r"v1.calibration.json: no key 'rows.0.se'; write it again with `kit calibrate`"):
        report(cfg, console=Console(file=open("/dev/null", "w")))
