"""Submission files: the sample's exact format, validation before writing, local scoring by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kit.artifacts import OOF, save_oof
from kit.config import CompetitionConfig, DataConfig, PathsConfig
from kit.decision.metrics import build_metric
from kit.errors import KitError
from kit.stages.score import score_file
from kit.submission import validate_submission, write_submission
from tests.conftest import CLASSES, assert_one_line_error, layout_toml, make_layout, one_hot, run_kit

TEST_IDS = ["t5", "t1", "t3", "t2", "t4"]  # the sample's order, not sorted


def test_one_hot_submission_has_the_samples_exact_format(tmp_path):
    cfg = make_layout(tmp_path, ["A", "B", "B", "C"], TEST_IDS)
    # predictions come in another id order than the sample's
    ids = np.array(["t1", "t2", "t3", "t4", "t5"])
    pred = one_hot(["A", "B", "A", "B", "C"])
    out = write_submission(pred, ids, CLASSES, cfg, "sub", {"variants": ["v"], "nested_cv_score": -1.0, "trivial_baseline": -4.0})
    sample_text = (cfg.data.dir / "sample_submission.csv").read_text().splitlines()
    text = out.read_text().splitlines()
    assert text[0] == sample_text[0]  # same header, same column order
    assert [line.split(",")[0] for line in text[1:]] == TEST_IDS  # the sample's id order
    assert text[1:] == ["t5,0,0,1", "t1,1,0,0", "t3,1,0,0", "t2,0,1,0", "t4,0,1,0"]  # ints like the sample
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["variants"] == ["v"] and meta["nested_cv_score"] == -1.0 and meta["trivial_baseline"] == -4.0
    assert meta["synthetic"] is False and "created" in meta


def test_float_valued_sample_is_mirrored(tmp_path):
    cfg = make_layout(tmp_path, ["A", "B", "C"], ["x", "y"], sample_value="0.0")
    out = write_submission(one_hot(["C", "A"]), np.array(["x", "y"]), CLASSES, cfg, "f", {})
    assert out.read_text().splitlines()[1:] == ["x,0.0,0.0,1.0", "y,1.0,0.0,0.0"]


def test_label_column_submission(tmp_path):
    cfg = make_layout(tmp_path, ["A", "B", "C", "A"], TEST_IDS, sample="label")
    pred = one_hot(["A", "B", "A", "B", "C"])
    out = write_submission(pred, np.array(["t1", "t2", "t3", "t4", "t5"]), CLASSES, cfg, "lab", {})
    assert out.read_text().splitlines() == ["id,label", "t5,C", "t1,A", "t3,A", "t2,B", "t4,B"]


def test_multi_label_label_column_submission_joins_classes(tmp_path):
    """A one-label-column sample in a multi-label competition: each row's classes joined by data.label_separator,
    data.none_label for a row of none; read back by the same checks; no none value means a one-line refusal."""
    from kit.submission import check_submission_file

    base = make_layout(tmp_path, ["A", "B", "C", "A"], TEST_IDS, sample="label")
    cfg = base.model_copy(update={"task": "multi-label", "data": base.data.model_copy(update={"none_label": "none"})})
    pred = np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0], [1, 1, 1], [0, 0, 1]], dtype=np.uint8)
    ids = np.array(["t1", "t2", "t3", "t4", "t5"])
    out = write_submission(pred, ids, CLASSES, cfg, "ml", {})
    assert out.read_text().splitlines() == ["id,label", "t5,C", "t1,A|C", "t3,B", "t2,none", "t4,A|B|C"]
    assert len(check_submission_file(out, cfg, CLASSES)) == 5
    no_none = cfg.model_copy(update={"data": cfg.data.model_copy(update={"none_label": None})})
    with pytest.raises(KitError, match="1 rows have no predicted class.*data.none_label"):
        write_submission(pred, ids, CLASSES, no_none, "ml2", {})


def test_without_sample_writes_id_and_class_columns(tmp_path):
    cfg = CompetitionConfig(
        task="multi-label",
        data=DataConfig(source="medmnist", dir=tmp_path / "none"),
        paths=PathsConfig(submissions=tmp_path / "subs"),
    )
    pred = np.array([[1, 0, 1], [0, 0, 0]], dtype=np.uint8)  # multi-label: several or no positives are fine
    out = write_submission(pred, np.array(["a", "b"]), CLASSES, cfg, "ml", {})
    assert out.read_text().splitlines() == ["id,A,B,C", "a,1,0,1", "b,0,0,0"]


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda df: df.assign(id=df["id"].replace("t3", "zz")), "row 4 has id 'zz' where the sample submission has 't3'"),
        (lambda df: df.iloc[[1, 0, 2, 3, 4]].reset_index(drop=True), "ids must be those of the sample submission, in its order"),
        (lambda df: df.drop(columns=["C"]), "columns differ from the sample submission (missing ['C']"),
        (lambda df: df[["id", "B", "A", "C"]], "columns differ"),
        (lambda df: df.assign(B=["0", "1", "0", "0", "0"]), "row 3 (id t1) has 2 positive classes"),
        (lambda df: df.assign(A=["0", None, "1", "0", "0"]), "row 3 (id t1), column 'A' is missing a value"),
        (lambda df: df.iloc[:4], "4 rows, expected 5 (one per test id, as in the sample submission)"),
        (lambda df: df.assign(A=["0", "2", "1", "0", "0"]), "expected 0 or 1"),
    ],
)
def test_validation_errors_are_one_clear_line(mutate, expected):
    sample = pd.DataFrame({"id": TEST_IDS, "A": ["0"] * 5, "B": ["0"] * 5, "C": ["0"] * 5})
    good = pd.DataFrame({"id": TEST_IDS, "A": ["0", "1", "1", "0", "0"], "B": ["0", "0", "0", "1", "1"], "C": ["1", "0", "0", "0", "0"]})
    validate_submission(good, sample, "multi-class", classes=CLASSES)  # the unmutated frame passes
    with pytest.raises(KitError) as err:
        validate_submission(mutate(good), sample, "multi-class", classes=CLASSES)
    message = str(err.value)
    assert expected in message and "\n" not in message


def test_invalid_prediction_writes_nothing(tmp_path):
    cfg = make_layout(tmp_path, ["A", "B", "C"], TEST_IDS)
    ids = np.array(["t1", "t2", "t3", "t4", "t5"])
    two_positives = one_hot(["A", "B", "A", "B", "C"])
    two_positives[2, 1] = 1
    with pytest.raises(KitError, match="2 positive classes"):
        write_submission(two_positives, ids, CLASSES, cfg, "bad", {})
    with pytest.raises(KitError, match="ids have no prediction"):
        write_submission(one_hot(["A", "B", "A", "B"]), ids[:4], CLASSES, cfg, "bad", {})
    assert not (cfg.paths.submissions / "bad.csv").exists()
    assert not (cfg.paths.submissions / "bad.json").exists()


def _write_solution(path: Path, ids: list[str], labels: list[str]) -> Path:
    pd.DataFrame({"id": ids, **{c: [int(x == c) for x in labels] for c in CLASSES}}).to_csv(path, index=False)
    return path


def test_score_file_by_hand(tmp_path, capsys):
    # train majority is B (the solution's majority is A): the baseline must use the training labels
    cfg = make_layout(tmp_path, ["B", "B", "B", "A", "C"], ["t1", "t2", "t3", "t4", "t5"])
    solution = _write_solution(tmp_path / "solution.csv", ["t1", "t2", "t3", "t4", "t5"], ["A", "A", "A", "B", "C"])
    # submission: A, B, A, B, A, written in a shuffled row order
    sub = tmp_path / "sub.csv"
    pd.DataFrame({"id": ["t5", "t4", "t3", "t2", "t1"], "A": [1, 0, 1, 0, 1], "B": [0, 1, 0, 1, 0], "C": [0, 0, 0, 0, 0]}).to_csv(sub, index=False)
    result = score_file(sub, solution, cfg)
    # A: TP 2, FP 1, FN 1 over N=3 -> -4/3; B: TP 1, FP 1 -> 0; C: FN 1 -> -5
    assert result["score"] == pytest.approx((-4 / 3 + 0 - 5) / 3)
    # B everywhere: A -15/3, B (1 - 4)/1, C -5
    assert result["trivial_baseline"] == pytest.approx((-5 - 3 - 5) / 3)
    assert result["per_class"]["C"] == pytest.approx(-5.0)
    out = capsys.readouterr().out
    assert "trivial baseline" in out and "-2.1111" in out and "-4.3333" in out

    # the same predictions as a label-column file score the same
    sub_label = tmp_path / "sub_label.csv"
    pd.DataFrame({"id": ["t1", "t2", "t3", "t4", "t5"], "label": ["A", "B", "A", "B", "A"]}).to_csv(sub_label, index=False)
    assert score_file(sub_label, solution, cfg)["score"] == pytest.approx(result["score"])


def test_score_file_rejects_mismatched_ids(tmp_path):
    cfg = make_layout(tmp_path, ["A", "B", "C"], ["t1", "t2"])
    solution = _write_solution(tmp_path / "solution.csv", ["t1", "t2"], ["A", "B"])
    sub = tmp_path / "sub.csv"
    pd.DataFrame({"id": ["t1", "t9"], "A": [1, 1], "B": [0, 0], "C": [0, 0]}).to_csv(sub, index=False)
    with pytest.raises(KitError, match="ids differ from the solution"):
        score_file(sub, solution, cfg)


def test_score_compare_argmax(tmp_path):
    ids = ["t1", "t2", "t3", "t4", "t5"]
    cfg = make_layout(tmp_path, ["B", "B", "B", "A", "C"], ids, variants=["v1", "missing_variant"])
    solution = _write_solution(tmp_path / "solution.csv", ids, ["A", "A", "A", "B", "C"])
    # two fold models whose mean logits have argmax A, B, A, B, A (test ids stored in another order)
    order = [4, 3, 2, 1, 0]
    mean = np.array([[2, 0, 0], [0, 2, 0], [2, 0, 0], [0, 2, 0], [2, 0, 0]], dtype=np.float32)[order]
    test_logits = np.stack([mean + 1.0, mean - 1.0])
    save_oof(
        cfg.paths.oof / "v1.npz",
        OOF(np.array(CLASSES), np.array(["tr0"]), np.array([0]), np.zeros((1, 3), np.float32),
            np.array(ids)[order], test_logits, np.full(3, 1 / 3)),
    )
    sub = tmp_path / "sub.csv"
    pd.DataFrame({"id": ids, "A": [1, 1, 1, 0, 0], "B": [0, 0, 0, 1, 0], "C": [0, 0, 0, 0, 1]}).to_csv(sub, index=False)
    result = score_file(sub, solution, cfg, compare_argmax=True)
    assert result["score"] == pytest.approx(1.0)  # perfect
    assert set(result["argmax"]) == {"v1"}
    assert result["argmax"]["v1"] == pytest.approx((-4 / 3 + 0 - 5) / 3)
    assert result["best_argmax"] == {"variant": "v1", "score": pytest.approx((-4 / 3 + 0 - 5) / 3)}


def test_score_file_names_the_file_with_a_wrong_header(tmp_path):
    cfg = make_layout(tmp_path, ["A", "B", "C"], ["t1", "t2"])
    solution = _write_solution(tmp_path / "solution.csv", ["t1", "t2"], ["A", "B"])
    sub = tmp_path / "sub.csv"
    pd.DataFrame({"image": ["t1", "t2"], "A": [1, 0], "B": [0, 1], "C": [0, 0]}).to_csv(sub, index=False)
    with pytest.raises(KitError, match=r"sub\.csv: no id column 'id'"):
        score_file(sub, solution, cfg)


def _no_data_config(tmp_path: Path) -> Path:
    config = tmp_path / "c.toml"
    config.write_text(f'task = "multi-class"\n[data]\ndir = "{tmp_path / "absent"}"\n')
    return config


def test_score_does_not_need_the_data_directory(tmp_path, capsys):
    solution = tmp_path / "solution.csv"
    pd.DataFrame({"id": ["t1", "t2", "t3"], "A": [1, 0, 0], "B": [0, 1, 1], "C": [0, 0, 0]}).to_csv(solution, index=False)
    sub = tmp_path / "sub.csv"
    pd.DataFrame({"id": ["t3", "t1", "t2"], "A": [0, 1, 1], "B": [1, 0, 0], "C": [0, 0, 0]}).to_csv(sub, index=False)
    config = _no_data_config(tmp_path)
    code, out, err = run_kit(["--config", config, "score", sub, "--solution", solution], capsys)
    assert code == 0, err
    # A: TP 1, FP 1 over N=1 -> 0; B: TP 1, FN 1 over N=2 -> -2; C: absent -> nan (not averaged)
    assert "-1.0000" in out and "majority class of the solution" in out


@pytest.mark.parametrize("which, row, needle", [
    ("submission", "t2,1,1,0", "row 3 (id t2) has 2 positive classes"),
    ("submission", "t2,0,0,0", "row 3 (id t2) has 0 positive classes"),
    ("solution", "t2,1,1,0", "row 3 (id t2) has 2 positive classes"),
])
def test_score_refuses_what_submit_refuses(tmp_path, capsys, which, row, needle):
    files = {name: tmp_path / f"{name}.csv" for name in ("submission", "solution")}
    for path in files.values():
        path.write_text("id,A,B,C\nt1,1,0,0\nt2,0,1,0\n")
    files[which].write_text(f"id,A,B,C\nt1,1,0,0\n{row}\n")
    config = _no_data_config(tmp_path)
    code, _, err = run_kit(["--config", config, "score", files["submission"], "--solution", files["solution"]], capsys)
    assert_one_line_error(code, err, str(files[which]), needle)


def test_score_warns_when_submit_would_refuse_the_form(tmp_path, capsys):
    cfg = make_layout(tmp_path, ["A", "B", "C"], ["t1", "t2"])
    config = layout_toml(tmp_path, cfg)
    solution = _write_solution(tmp_path / "solution.csv", ["t1", "t2"], ["A", "B"])
    sub = tmp_path / "sub.csv"
    sub.write_text("id,A,B,C\nt2,0,1,0\nt1,1,0,0\n")  # right labels, not the sample's order
    code, out, err = run_kit(["--config", config, "score", sub, "--solution", solution], capsys)
    assert code == 0, err
    assert "warning: `kit submit` would refuse this file:" in out and "ids must be those of the sample submission, in its order" in out
    assert "+1.0000" in out


@pytest.mark.parametrize("content, needle", [
    (b"", "file is empty"),
    (b"id,A,B,C\nt1,1,0,0\nt\xe92,0,1,0\n", "not UTF-8 text (byte 0xe9 at line 3"),
    (b"id,A,B,C\nt1,1,0,0,1\nt2,0,1,0\n", "line 2 has 5 fields, the header has 4"),
])
def test_score_of_a_broken_csv_is_one_line(tmp_path, capsys, content, needle):
    solution = _write_solution(tmp_path / "solution.csv", ["t1", "t2"], ["A", "B"])
    sub = tmp_path / "sub.csv"
    sub.write_bytes(content)
    code, _, err = run_kit(["--config", _no_data_config(tmp_path), "score", sub, "--solution", solution], capsys)
    assert_one_line_error(code, err, str(sub), needle)


@pytest.fixture
def blend_ready(tmp_path) -> tuple[Path, CompetitionConfig]:
    """A tiny layout with folds and one variant's OOF (informative logits), ready for `kit blend`."""
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(3), [24, 12, 9]))
    test_ids = [f"t{i}" for i in range(10)]
    cfg = make_layout(tmp_path, [CLASSES[k] for k in labels], test_ids, variants=["v1"])
    ids = np.array([f"tr{i:03d}" for i in range(len(labels))])
    fold = np.zeros(len(labels), dtype=np.int64)
    for c in range(3):
        rows = np.flatnonzero(labels == c)
        fold[rows] = np.arange(len(rows)) % 3
    pd.DataFrame({"id": ids, "fold": fold}).to_csv(cfg.folds.path, index=False)
    logits = (2.0 * np.eye(3)[labels] + rng.normal(0, 1, (len(labels), 3))).astype(np.float32)
    test_logits = rng.normal(0, 1, (3, len(test_ids), 3)).astype(np.float32)
    save_oof(cfg.paths.oof / "v1.npz", OOF(np.array(CLASSES), ids, fold, logits, np.array(test_ids), test_logits, np.full(3, 1 / 3)),
             {"metric": build_metric(cfg.metric).params()})
    cfg = cfg.model_copy(update={"folds": cfg.folds.model_copy(update={"n_folds": 3})})
    return layout_toml(tmp_path, cfg), cfg


def test_writing_a_submission_into_a_full_or_read_only_folder_is_one_line(blend_ready, capsys, read_only, disk_full):
    config, cfg = blend_ready
    code, _, err = run_kit(["--config", config, "blend", "--name", "x"], capsys)
    assert code == 0, err
    folder = cfg.paths.submissions
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    oof_before = (cfg.paths.oof / "v1.npz").read_bytes()
    disk_full(folder)
    code, _, err = run_kit(["--config", config, "blend", "--name", "x"], capsys)
    assert_one_line_error(code, err, str(folder / "x.csv"), "no space left")
    read_only(folder)
    code, _, err = run_kit(["--config", config, "blend", "--name", "y"], capsys)
    assert_one_line_error(code, err, str(folder / "y.csv"), "cannot write")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # the earlier submission is intact, nothing new
    assert (cfg.paths.oof / "v1.npz").read_bytes() == oof_before
