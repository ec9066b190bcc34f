"""An OOF written by hand from a model trained outside the kit (`kit calibrate --oof FILE`).

Every way such a file can be wrong is refused through the CLI with exit code 2 and one line that names
the file and says what to write instead (docs/files.md, "An OOF from your own model"). The files are
written with numpy, not with the kit's save_oof, as a competitor's notebook would.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kit.decision.metrics import build_metric
from tests.conftest import assert_one_line_error, run_kit


@pytest.fixture()
def external(tiny_competition, tmp_path, make_folds_for):
    """The tiny competition with this test's folds.csv and oof folder, a config pointing at them, and the
    arrays of a valid hand-made OOF (an informative model, trained under the uniform prior)."""
    from kit.data.sources import open_source

    base = tiny_competition.cfg
    folds_csv, oof_dir = tmp_path / "folds" / "folds.csv", tmp_path / "oof"
    cfg = base.model_copy(update={"folds": base.folds.model_copy(update={"path": folds_csv})})
    source = open_source(cfg)
    y = source.train.labels.argmax(axis=1)
    rng = np.random.default_rng(0)
    fold = make_folds_for(y, 3, rng)
    folds_csv.parent.mkdir()
    oof_dir.mkdir()
    pd.DataFrame({"id": source.train.ids, "fold": fold}).to_csv(folds_csv, index=False)
    text = tiny_competition.config_path.read_text()
    text = text.replace(str(base.folds.path), str(folds_csv)).replace(str(base.paths.oof), str(oof_dir))
    (tmp_path / "competition.toml").write_text(text)
    c = len(source.classes)
    logits = rng.normal(size=(len(y), c)).astype(np.float32)
    logits[np.arange(len(y)), y] += 3.0
    arrays = {
        "classes": np.array(source.classes), "ids": np.array(source.train.ids).astype(str), "fold": fold.astype(np.int64),
        "logits": logits, "test_ids": np.array(source.test.ids).astype(str),
        "test_logits": rng.normal(size=(3, len(source.test.ids), c)).astype(np.float32), "train_prior": np.full(c, 1 / c),
    }
    return tmp_path, arrays, build_metric(base.metric).params()


def _write(root: Path, arrays: dict, meta: dict | None, name: str = "mine") -> Path:
    path = root / "oof" / f"{name}.npz"
    np.savez(path, **arrays)
    if meta is not None:
        (root / "oof" / f"{name}.json").write_text(json.dumps(meta))
    return path


def _refused(root: Path, arrays: dict, meta: dict | None, capsys, *needles: str) -> str:
    path = _write(root, arrays, meta)
    code, _, err = run_kit(["--config", root / "competition.toml", "calibrate", "--oof", path], capsys)
    assert_one_line_error(code, err, str(path), *needles)
    assert not (root / "oof" / "mine.decision.json").exists()
    return err


def test_a_hand_made_oof_calibrates(external, capsys):
    root, arrays, metric = external
    path = _write(root, arrays, {"metric": metric})
    code, out, err = run_kit(["--config", root / "competition.toml", "calibrate", "--oof", path], capsys)
    assert code == 0, err
    decision = json.loads((root / "oof" / "mine.decision.json").read_text())
    assert decision["rule"] and "trivial baseline" in out


@pytest.mark.parametrize("name, spec", [
    ("classes", "(C,) str"), ("ids", "(n,) str"), ("fold", "(n,) int"), ("logits", "(n, C) float32"), ("test_ids", "(m,) str"),
    ("test_logits", "(K, m, C) float32, one slice per fold model"), ("train_prior", "(C,) float, the class distribution the model was trained under"),
])
def test_a_missing_array_is_named_with_its_shape_and_type(external, capsys, name, spec):
    root, arrays, metric = external
    del arrays[name]
    err = _refused(root, arrays, {"metric": metric}, capsys, f"missing array {name} {spec}", "An OOF from your own model")
    assert ("the sampler's distribution for a re-weighting sampler" in err) == (name == "train_prior")


def test_ids_stored_as_numbers_are_told_to_be_strings(external, capsys):
    root, arrays, metric = external
    arrays["test_ids"] = np.arange(len(arrays["test_ids"]))
    _refused(root, arrays, {"metric": metric}, capsys, "array 'test_ids' has dtype int64, expected (m,) str", ".astype(str)")


def test_ids_from_a_pandas_column_are_told_to_be_strings(external, capsys):
    root, arrays, metric = external
    arrays["ids"] = arrays["ids"].astype(object)  # what df["id"].values gives: pickled by np.savez, never unpickled by the kit
    _refused(root, arrays, {"metric": metric}, capsys, "array 'ids' holds Python objects", ".astype(str)")


def test_classes_in_another_order_show_the_first_difference(external, capsys):
    root, arrays, metric = external
    classes = arrays["classes"].copy()
    classes[[2, 3]] = classes[[3, 2]]
    arrays["classes"] = classes
    _refused(root, arrays, {"metric": metric}, capsys, f"classes[2] is '{classes[2]}' where it has '{classes[3]}'",
             "class order ['", "the data source")


def test_classes_with_other_names_are_named(external, capsys):
    root, arrays, metric = external
    first = str(arrays["classes"][0])
    arrays["classes"] = np.array(["Not a class", *arrays["classes"][1:]])
    _refused(root, arrays, {"metric": metric}, capsys, "not competition classes: ['Not a class']", f"missing: ['{first}']")


def test_ids_not_in_folds_csv_say_each_row_comes_from_the_fold_model_that_did_not_see_it(external, capsys):
    root, arrays, metric = external
    arrays = {**arrays, **{k: arrays[k][:-1] for k in ("ids", "fold", "logits")}}
    _refused(root, arrays, {"metric": metric}, capsys, "1 ids of the folds missing", "one row per id of folds.csv", "did not see it")


def test_folds_other_than_folds_csv_are_refused(external, capsys):
    root, arrays, metric = external
    arrays["fold"] = (arrays["fold"] + 1) % 3
    _refused(root, arrays, {"metric": metric}, capsys, "ids sit in another fold", "`fold` equal to its column")


def test_probabilities_are_refused_with_what_to_store(external, capsys):
    root, arrays, metric = external
    z = arrays["logits"].astype(np.float64)
    arrays["logits"] = (np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)).astype(np.float32)
    _refused(root, arrays, {"metric": metric}, capsys, "logits look like probabilities", "store logits (log-probabilities are fine")


def test_log_probabilities_are_accepted(external, capsys):
    root, arrays, metric = external
    z = arrays["logits"].astype(np.float64)
    arrays["logits"] = (z - np.log(np.exp(z).sum(axis=1, keepdims=True))).astype(np.float32)
    path = _write(root, arrays, {"metric": metric})
    code, _, err = run_kit(["--config", root / "competition.toml", "calibrate", "--oof", path], capsys)
    assert code == 0, err


def test_non_finite_logits_are_refused(external, capsys):
    root, arrays, metric = external
    arrays["test_logits"][1, 4, 2] = np.nan
    _refused(root, arrays, {"metric": metric}, capsys, "test_logits has 1 NaN or infinite values (first at index (1, 4, 2))", "store finite values")


def test_a_train_prior_that_is_not_a_distribution_says_what_it_means(external, capsys):
    root, arrays, metric = external
    arrays["train_prior"] = np.ones(len(arrays["classes"]))  # counts-like, not normalized
    _refused(root, arrays, {"metric": metric}, capsys, "train_prior sums to 20, not 1", "the sampler's distribution",
             "uniform for balanced softmax or logit adjustment")


def test_a_missing_json_prints_the_minimal_one_to_write(external, capsys):
    root, arrays, metric = external
    err = _refused(root, arrays, None, capsys, "no mine.json beside it", "your own model: write")
    minimal = err.split("holding ", 1)[1].split(" (the metric", 1)[0]
    assert json.loads(minimal) == {"metric": metric}  # the line holds a JSON that works as it is
    (root / "oof" / "mine.json").write_text(minimal)
    code, _, err = run_kit(["--config", root / "competition.toml", "calibrate", "--oof", root / "oof" / "mine.npz"], capsys)
    assert code == 0, err


def test_a_json_without_the_metric_is_refused(external, capsys):
    root, arrays, metric = external
    _refused(root, arrays, {"note": "from my notebook"}, capsys, "mine.json has no key 'metric'", json.dumps({"metric": metric}))


def test_a_json_for_another_metric_is_refused(external, capsys):
    root, arrays, metric = external
    path = _write(root, arrays, {"metric": {**metric, "w": 3.0}})
    code, _, err = run_kit(["--config", root / "competition.toml", "calibrate", "--oof", path], capsys)
    assert_one_line_error(code, err, str(path.with_suffix(".json")), "made for metric linear(a=1, b=1, w=3)", "your own model",
                          json.dumps(metric))


def test_blend_oof_passes_the_same_checks(external, capsys):
    root, arrays, metric = external
    good = _write(root, arrays, {"metric": metric}, name="good")
    arrays["logits"] = np.exp(arrays["logits"]) / np.exp(arrays["logits"]).sum(axis=1, keepdims=True)
    bad = _write(root, arrays, {"metric": metric})
    code, _, err = run_kit(["--config", root / "competition.toml", "blend", "--oof", good, "--oof", bad, "--name", "b"], capsys)
    assert_one_line_error(code, err, str(bad), "logits look like probabilities", "store logits (log-probabilities are fine")
    assert sorted(p.name for p in (root / "oof").iterdir()) == ["good.json", "good.npz", "mine.json", "mine.npz"]  # nothing written
