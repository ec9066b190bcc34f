"""Configs: the shipped ones validate; every config error is one line naming the file and the key."""

from __future__ import annotations

import pytest

from kit.config import available_variants, load_competition, load_model, resolve_variants
from kit.errors import KitError
from tests.conftest import REPO, assert_one_line_error, run_kit


@pytest.mark.parametrize("name", ["competition.toml", "chest-xray.toml", "chestmnist.toml"])
def test_shipped_competition_configs_validate(name):
    cfg = load_competition(REPO / "configs" / name)
    assert cfg.source_file == REPO / "configs" / name
    assert cfg.variants, "every shipped config lists the variants `make train` trains"
    for variant in cfg.variants:
        assert (REPO / "configs" / "models" / f"{variant}.toml").is_file(), variant


def test_shipped_variant_configs_validate():
    cfg = load_competition(REPO / "configs" / "competition.toml")
    cfg = cfg.model_copy(update={"paths": cfg.paths.model_copy(update={"models": REPO / "configs" / "models"})})
    names = available_variants(cfg)
    assert names
    for name in names:
        assert load_model(name, cfg).name == name


def test_real_configs_point_at_their_data():
    real = load_competition(REPO / "configs" / "chest-xray.toml")
    assert real.task == "multi-class" and real.data.source == "kaggle"
    assert str(real.data.dir) == "data/26-t-1-dl-gen-ainppe-1" and real.kaggle.competition == "26-t-1-dl-gen-ainppe-1"
    assert {"convnext_tiny_224", "convnext_tiny_256"} <= set(real.variants)
    mnist = load_competition(REPO / "configs" / "chestmnist.toml")
    assert mnist.task == "multi-label" and mnist.data.source == "medmnist" and mnist.variants == ["chestmnist_cnn"]


@pytest.mark.parametrize(
    "text, needles",
    [
        ('task = "multi-class"\nbogus_key = 1\n', ["unknown key 'bogus_key'"]),
        ('[data]\ndir = "x"\nid_colum = "id"\n', ["unknown key 'data.id_colum'"]),
        ('[folds]\nn_folds = "five"\n', ["key 'folds.n_folds'", "five"]),
        ("[folds]\nn_folds = 1\n", ["key 'folds.n_folds'"]),
        ('task = "regression"\n', ["key 'task'"]),
        ('[metric]\nw = "heavy"\n', ["key 'metric.w'"]),
        ('[data]\nlabel_column = "label"\nclass_columns = ["a"]\n', ["label_column or class_columns"]),
        ("task = \n", ["not valid TOML"]),
    ],
)
def test_config_errors_name_file_and_key(tmp_path, capsys, text, needles):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(KitError) as info:
        load_competition(path)
    assert str(path) in str(info.value)
    code, _, err = run_kit(["--config", path, "folds"], capsys)
    assert_one_line_error(code, err, str(path), *needles)


def test_missing_config_file(tmp_path, capsys):
    code, _, err = run_kit(["--config", tmp_path / "nope.toml", "folds"], capsys)
    assert_one_line_error(code, err, "nope.toml", "config file not found")


def test_model_config_errors(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "good.toml").write_text("image_size = 32\nepochs = 1\n")
    (models / "typo.toml").write_text("learning_rate = 0.1\n")
    (models / "wrong.toml").write_text('batch_size = "big"\n')
    comp = tmp_path / "c.toml"
    comp.write_text(f'variants = ["good"]\n[paths]\nmodels = "{models}"\n')
    cfg = load_competition(comp)
    assert load_model("good", cfg).image_size == 32
    with pytest.raises(KitError, match=r"typo.toml: unknown key 'learning_rate'"):
        load_model("typo", cfg)
    with pytest.raises(KitError, match=r"wrong.toml: key 'batch_size'"):
        load_model("wrong", cfg)
    with pytest.raises(KitError, match=r"no such variant 'absent' \(known: good, typo, wrong\)"):
        load_model("absent", cfg)
    assert resolve_variants(None, cfg) == ["good"] and resolve_variants(["all"], cfg) == ["good"]
    empty = tmp_path / "e.toml"
    empty.write_text("")
    with pytest.raises(KitError, match="key 'variants' is empty"):
        resolve_variants(["all"], load_competition(empty))
