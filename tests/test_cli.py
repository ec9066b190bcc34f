"""One command line: --config before or after the command, --variants lists, quick train overrides that are
part of the job identity, help in words, one submissions folder per competition config."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from kit.config import ModelConfig, load_competition, with_overrides
from kit.errors import KitError
from tests.conftest import REPO, assert_one_line_error, run_kit


def test_config_moves_before_the_command():
    from kit.cli import _config_first

    assert _config_first(["train", "--fold", "1", "--config", "c.toml"]) == ["--config", "c.toml", "train", "--fold", "1"]
    assert _config_first(["blend", "-c", "c.toml", "--name", "x"]) == ["-c", "c.toml", "blend", "--name", "x"]
    assert _config_first(["score", "--config=c.toml", "s.csv"]) == ["--config=c.toml", "score", "s.csv"]
    assert _config_first(["--config", "c.toml", "folds"]) == ["--config", "c.toml", "folds"]
    assert _config_first(["submit", "-m", "x", "--", "--config"]) == ["submit", "-m", "x", "--", "--config"]


@pytest.mark.parametrize("where", ["before", "after"])
def test_config_is_read_before_or_after_the_command(tiny_competition, capsys, where):
    # the tiny config has 3 folds, the default one 5: the message shows which config was read
    config = ["--config", tiny_competition.config_path]
    args = [*config, "train", "--fold", "x"] if where == "before" else ["train", "--fold", "x", *config]
    code, _, err = run_kit(args, capsys)
    assert_one_line_error(code, err, "--fold 'x'", "0..2")


def test_variants_lists_and_quick_overrides_reach_the_stage(tiny_competition, monkeypatch, capsys):
    import kit.stages.train

    seen = {}
    monkeypatch.setattr(kit.stages.train, "train", lambda cfg, variants, folds, resume, **kw: seen.update(variants=variants, folds=folds, **kw))
    code, _, err = run_kit(
        ["train", "--variants", "a,b", "--variants", "c", "--variant", "d", "--fold", "1", "--epochs", "1", "--image-size", "16",
         "--batch-size", "8", "--max-train-images", "40", "--config", tiny_competition.config_path], capsys,
    )
    assert code == 0, err
    assert seen["variants"] == ["d", "a", "b", "c"] and seen["folds"] == [1]
    assert seen["overrides"] == {"epochs": 1, "image_size": 16, "batch_size": 8, "max_train_images": 40}
    run_kit(["--config", tiny_competition.config_path, "train"], capsys)
    assert seen["variants"] == ["cnn_demo"] and seen["overrides"] is None  # the config's variants, its own recipe


def test_calibrate_takes_variants_lists(tiny_competition, capsys):
    code, _, err = run_kit(["calibrate", "--variants", "nope_a,nope_b", "--config", tiny_competition.config_path], capsys)
    assert_one_line_error(code, err, "nope_a.npz")


def test_an_override_is_validated_like_the_toml():
    mcfg = ModelConfig(name="v", epochs=12, mixup_alpha=0.2, batch_size=32)
    quick = with_overrides(mcfg, {"epochs": 1, "image_size": 64})
    assert (quick.epochs, quick.image_size, quick.mixup_alpha) == (1, 64, 0.2)
    with pytest.raises(KitError, match="--image-size"):
        with_overrides(mcfg, {"image_size": 4})
    with pytest.raises(KitError, match="even batch_size"):  # a check across keys applies to the new value too
        with_overrides(mcfg, {"batch_size": 7})


def test_bad_override_on_the_command_line_is_one_line(tiny_competition, capsys):
    code, _, err = run_kit(["train", "--image-size", "4", "--config", tiny_competition.config_path], capsys)
    assert_one_line_error(code, err, "--image-size", "cnn_demo")


def test_a_quick_run_never_resumes_into_a_full_one(tiny_competition, tmp_path, variant_run):
    from kit.stages.train import train
    from kit.training.identity import read_preds

    cfg = variant_run(tiny_competition, tmp_path)  # the variant trains 2 epochs
    quiet = Console(quiet=True)
    train(cfg, ["tiny"], [0], resume=False, console=quiet, overrides={"epochs": 1, "max_train_images": 60})
    preds = cfg.paths.runs / "tiny" / "fold0" / "preds.npz"
    arrays, _ = read_preds(preds, "")
    summary = json.loads(str(arrays["metrics"]))
    assert summary["epochs_run"] == 1 and summary["n_train"] == 60
    with pytest.raises(KitError, match="model config changed"):  # the full recipe: refused, not resumed
        train(cfg, ["tiny"], [0], resume=True, console=quiet)
    before = preds.read_bytes()
    train(cfg, ["tiny"], [0], resume=True, console=quiet, overrides={"epochs": 1, "max_train_images": 60})
    assert preds.read_bytes() == before  # the same quick run again: already done, kept


def _help(args: list[str]) -> str:
    from kit.cli import app

    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_help_is_in_words_not_python_types():
    from typer.main import get_command

    from kit.cli import app

    python_types = re.compile(r"<(str|int|float|bool|path)>|list\[|\b(INTEGER|FLOAT|BOOLEAN)\b", re.IGNORECASE)
    commands = sorted(get_command(app).commands)
    assert {"train", "calibrate", "blend"} <= set(commands)
    for args in [[], *([c] for c in commands)]:
        text = _help(args)
        assert not python_types.search(text), (args, python_types.search(text).group(0))
    train_help = _help(["train"])
    for words in ("--variants", "A,B", "--epochs", "--image-size", "PIXELS", "--max-train-images", "--fold"):
        assert words in train_help
    assert "FILE" in _help([])


def test_one_submissions_folder_per_competition_config(tmp_path):
    other = tmp_path / "lung-comp.toml"
    other.write_text('task = "multi-class"\n')
    assert load_competition(other).paths.submissions == Path("submissions/lung-comp")
    default_named = tmp_path / "competition.toml"
    default_named.write_text('task = "multi-class"\n')
    assert load_competition(default_named).paths.submissions == Path("submissions")
    explicit = tmp_path / "x.toml"
    explicit.write_text('[paths]\nsubmissions = "elsewhere"\n')
    assert load_competition(explicit).paths.submissions == Path("elsewhere")
    assert load_competition(REPO / "configs" / "chest-xray.toml").paths.submissions == Path("submissions/chest-xray")
    assert load_competition(REPO / "configs" / "competition.toml").paths.submissions == Path("submissions")


def test_compare_argmax_follows_the_blends_recorded_members(tmp_path):
    from kit.stages.score import blend_members

    sub = tmp_path / "blend.csv"
    sub.write_text("id,a\n")
    assert blend_members(sub) is None  # no provenance: the config's variants are used
    sub.with_suffix(".json").write_text(json.dumps({"variants": ["v2", "v3"], "weights": {"v2": 0.5, "v3": 0.5}}))
    assert blend_members(sub) == ["v2", "v3"]
    sub.with_suffix(".json").write_text("{not json")
    assert blend_members(sub) is None



def test_each_finished_command_records_its_wall_time(tiny_competition, tmp_path, monkeypatch, capsys):
    from kit.timings import read

    config = tiny_competition.config_path
    code, _, err = run_kit(["--config", config, "timings"], capsys)
    assert_one_line_error(code, err, "KIT_TIMINGS is not set")
    log = tmp_path / "runs" / "timings.jsonl"
    monkeypatch.setenv("KIT_TIMINGS", str(log))
    assert run_kit(["--config", config, "timings", "--reset"], capsys)[0] == 0
    code, _, err = run_kit(["timings", "--config", config], capsys)
    assert_one_line_error(code, err, "timings.jsonl: no timings recorded yet")
    assert run_kit(["folds", "--config", config], capsys)[0] == 0
    assert run_kit(["calibrate", "--variants", "nope", "--config", config], capsys)[0] == 2  # a failed command records nothing
    rows = read(log)
    assert [(r["stage"], r["command"]) for r in rows] == [("folds", "folds")] and rows[0]["seconds"] > 0
    code, out, _ = run_kit(["--config", config, "timings"], capsys)
    assert code == 0 and "folds" in out and "total" in out and f"{rows[0]['seconds']:.1f}" in out
    monkeypatch.delenv("KIT_TIMINGS")
    assert run_kit(["folds", "--config", config], capsys)[0] == 0 and len(read(log)) == 1  # no KIT_TIMINGS: nothing written
