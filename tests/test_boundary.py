"""Issue 18 at the boundary, without a server: credentials in every form, text from outside, the dashboard
host, names and paths, stale OOF files and numbers that are not finite (tests/test_kaggle.py has the server faults)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from kit.config import ModelConfig
from kit.errors import KitError, scrub_secrets
from kit.leaderboard.client import clean_text, scrub

KEY = "k3y-for-boundary-tests-0123456789"
TOKEN = "KGAT_boundary-token-abcdef"


@pytest.fixture
def credentials(monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    monkeypatch.setenv("KAGGLE_API_TOKEN", TOKEN)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle-dir"))


def test_every_form_of_a_credential_is_scrubbed_from_messages(credentials):
    basic = base64.b64encode(f"someone:{KEY}".encode()).decode()
    text = f"key {KEY}; pair someone:{KEY}; header Authorization: Basic {basic}; unpadded {basic.rstrip('=')}; Bearer {TOKEN}"
    for cleaned in (scrub_secrets(text), scrub(text), str(KitError(text))):
        for secret in (KEY, basic, basic.rstrip("="), TOKEN, f"someone:{KEY}"):
            assert secret not in cleaned
        assert "Basic ***" in cleaned and "Bearer ***" in cleaned


def test_kaggle_json_credentials_are_scrubbed_too(monkeypatch, tmp_path):
    import json

    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "kaggle.json").write_text(json.dumps({"username": "u", "key": KEY}))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    basic = base64.b64encode(f"u:{KEY}".encode()).decode()
    assert str(KitError(f"echo {basic} and {KEY}")) == "echo *** and ***"


def test_outside_text_loses_control_and_escape_characters():
    assert clean_text("\x1b[2J\x1b[1;31mred\x1b[0m\x1b]8;;http://x\x07link\x1b]8;;\x07\x00\x08\r\nnext\u202eevil") == "redlink next evil"
    assert clean_text("[bold]kept as text[/]") == "[bold]kept as text[/]"


def test_a_bug_traceback_never_shows_a_credential(credentials, monkeypatch, capsys):
    from kit import cli

    def crash():
        raise RuntimeError(f"bug while holding Authorization: Bearer {TOKEN}")

    monkeypatch.setattr(cli, "app", crash)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "Traceback" in err and "Bearer ***" in err and TOKEN not in err


@pytest.mark.parametrize("host, warned", [("127.0.0.1", False), ("localhost", False), ("::1", False), ("127.0.0.2", False),
                                          ("0.0.0.0", True), ("192.168.1.5", True), ("::", True), ("example.org", True)])
def test_dashboard_on_a_non_loopback_host_warns_that_studies_are_open(tiny_competition, monkeypatch, host, warned):
    import optuna_dashboard
    from rich.console import Console

    from kit.studies import dashboard

    monkeypatch.setattr(optuna_dashboard, "run_server", lambda storage, host, port: None)
    console = Console(record=True, width=300)
    dashboard(tiny_competition.cfg, host, 8080, console=console)
    out = console.export_text()
    assert ("without authentication" in out) is warned, out


# Names and paths are data (class 2).

def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def layout(tmp_path):
    from tests.conftest import layout_toml, make_layout

    cfg = make_layout(tmp_path, ["A", "B", "C"] * 5, ["t1", "t2", "t3"], variants=[])
    return tmp_path, layout_toml(tmp_path, cfg)


TRAVERSALS = ["../../x", "a/b", "..", ".hidden", "ledger", "x" * 101, "a b", "-rf", "all", "v.calibration"]


@pytest.mark.parametrize("bad", TRAVERSALS)
@pytest.mark.parametrize("command", [
    ["train", "--variant", "{}"], ["calibrate", "--variant", "{}"], ["blend", "--variants", "{}"], ["blend", "--name", "{}"],
    ["submit", "-m", "x", "--competition", "{}"], ["submissions", "--competition", "{}"], ["download", "--competition", "{}"],
])
def test_a_name_that_is_not_a_plain_name_is_refused_before_anything_is_read_or_written(layout, capsys, bad, command):
    from tests.conftest import assert_one_line_error, run_kit

    root, config = layout
    if bad == "all" and command[0] in ("train", "calibrate", "blend") and command[1] != "--name":
        pytest.skip("'all' is the keyword for the config's variants there")
    before = _files(root)
    code, _, err = run_kit(["--config", config, *[a.format(bad) for a in command]], capsys)
    assert_one_line_error(code, err, repr(bad))
    assert _files(root) == before


@pytest.mark.parametrize("line, needle", [
    ('variants = ["../x"]', "key 'variants.0'"),
    ('variants = ["a", "b", "a"]', "variant 'a' is listed 2 times"),
    ('[kaggle]\ncompetition = "../other"', "key 'kaggle.competition'"),
])
def test_names_in_the_competition_config_are_checked_at_load(tmp_path, line, needle):
    from kit.config import load_competition

    path = tmp_path / "c.toml"
    path.write_text(line + "\n")
    with pytest.raises(KitError, match=re.escape(needle)):
        load_competition(path)


def test_a_variant_file_whose_name_key_differs_from_its_file_name_is_refused(tmp_path):
    from kit.config import CompetitionConfig, PathsConfig, load_model

    cfg = CompetitionConfig(paths=PathsConfig(models=tmp_path))
    (tmp_path / "t1.toml").write_text('name = "t2"\nbackbone = "chestmnist_cnn"\n')
    with pytest.raises(KitError, match=r"t1\.toml: key 'name' = 't2' differs from the file's name 't1'"):
        load_model("t1", cfg)
    (tmp_path / "t1.toml").write_text('name = "t1"\nbackbone = "chestmnist_cnn"\n')
    assert load_model("t1", cfg).name == "t1"
    with pytest.raises(KitError, match=r"variant '\.\./t1': holds '/'"):
        load_model("../t1", cfg)


def test_home_and_variables_in_path_keys_are_expanded_or_refused(tmp_path, monkeypatch):
    from kit.config import load_competition

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KIT_TEST_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("KIT_TEST_UNSET", raising=False)
    path = tmp_path / "c.toml"
    path.write_text('[data]\ndir = "$KIT_TEST_DATA/x"\n[paths]\noof = "~/oof"\nruns = "${KIT_TEST_DATA}/runs"\n')
    cfg = load_competition(path)
    assert cfg.data.dir == tmp_path / "data" / "x" and cfg.paths.oof == tmp_path / "home" / "oof" and cfg.paths.runs == tmp_path / "data" / "runs"
    path.write_text('[paths]\noof = "$KIT_TEST_UNSET/oof"\n')
    with pytest.raises(KitError, match=r"key 'paths\.oof': .*\$KIT_TEST_UNSET is not set"):
        load_competition(path)


def test_a_missing_relative_path_says_it_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    from kit.config import load_competition

    monkeypatch.chdir(tmp_path)
    with pytest.raises(KitError, match=r"nope\.toml: config file not found \(relative to the working directory .*, not to the config file\)"):
        load_competition("nope.toml")
    from kit.artifacts import load_oof, read_folds
    from kit.data.sources import open_source

    for read in (lambda: load_oof(Path("oof/v.npz")), lambda: read_folds(Path("folds/folds.csv")),
                 lambda: open_source(load_competition_text(tmp_path, '[data]\ndir = "data/nowhere"\n'))):
        with pytest.raises(KitError, match=r"\(relative to the working directory "):
            read()


def load_competition_text(root, text):
    from kit.config import load_competition

    (root / "c.toml").write_text(text)
    return load_competition(root / "c.toml")


# Data and numbers (class 3) and messages that point at the cause (class 5).

FLOAT_KEYS = [name for name, f in ModelConfig.model_fields.items() if "float" in str(f.annotation)]


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_every_float_key_of_a_recipe_refuses_inf_and_nan(tmp_path, key, value):
    from kit.config import CompetitionConfig, PathsConfig, load_model

    (tmp_path / "v.toml").write_text(f'backbone = "chestmnist_cnn"\n{key} = {value}\n' if key != "tta_scales" else
                                     f'backbone = "chestmnist_cnn"\n{key} = [{value}]\n')
    with pytest.raises(KitError, match=rf"v\.toml: key '{key}(\.0)?': Input should be a finite number"):
        load_model("v", CompetitionConfig(paths=PathsConfig(models=tmp_path)))


def test_competition_float_keys_refuse_inf(tmp_path):
    from kit.config import load_competition

    path = tmp_path / "c.toml"
    path.write_text("[calibrate]\nshrinkage = inf\n")
    with pytest.raises(KitError, match=r"key 'calibrate.shrinkage': Input should be a finite number"):
        load_competition(path)


def test_a_fixed_size_backbone_is_checked_against_image_size_at_load(tmp_path):
    from kit.config import CompetitionConfig, PathsConfig, load_model

    (tmp_path / "vit.toml").write_text('backbone = "test_vit"\npretrained = false\nimage_size = 64\n')
    with pytest.raises(KitError, match=r"vit\.toml: key 'image_size' = 64: backbone 'test_vit' takes only 160 px images"):
        load_model("vit", CompetitionConfig(paths=PathsConfig(models=tmp_path)))
    (tmp_path / "cnn.toml").write_text('backbone = "test_resnet"\npretrained = false\nimage_size = 64\n')
    assert load_model("cnn", CompetitionConfig(paths=PathsConfig(models=tmp_path))).image_size == 64


def _layout(tmp_path, **data):
    from tests.conftest import make_layout

    cfg = make_layout(tmp_path, ["A", "B", "C"] * 5, ["t1", "t2", "t3"])
    return cfg.model_copy(update={"data": cfg.data.model_copy(update=data)})


def test_patient_ids_are_read_as_written(tmp_path):
    import pandas as pd

    from kit.data.sources import open_source

    cfg = _layout(tmp_path, patient_column="patient")
    train = pd.read_csv(cfg.data.dir / "train.csv", dtype=str)
    train["patient"] = ["000012", "12", "12.0"] * 5
    train.to_csv(cfg.data.dir / "train.csv", index=False)
    groups = open_source(cfg).train.groups
    assert groups[:3].tolist() == ["000012", "12", "12.0"]


@pytest.mark.parametrize("edit, needles", [
    (lambda text: text.replace("id,A,B,C", "id,A,B,C,patient").replace(",0\n", ",0,p7\n").replace(",1\n", ",1,p7\n"),
     ["column 'patient' holds values other than 0/1", "data.patient_column", "data.class_columns"]),
    (lambda text: text.replace("id,A,B,C", "id,A,B,C,").replace(",0\n", ",0,\n").replace(",1\n", ",1,\n"),
     ["'Unnamed: 4' (an empty header field: a trailing comma in the header?)", "data.class_columns"]),
])
def test_a_one_hot_train_csv_with_other_columns_names_them_and_the_keys(tmp_path, edit, needles):
    from kit.data.sources import open_source

    cfg = _layout(tmp_path)
    path = cfg.data.dir / "train.csv"
    path.write_text(edit(path.read_text()))
    with pytest.raises(KitError) as err:
        open_source(cfg)
    for needle in needles:
        assert needle in str(err.value)


def test_all_images_missing_blames_the_pattern_not_the_files(tmp_path):
    from kit.data.sources import open_source

    cfg = _layout(tmp_path, on_bad_image="skip")
    for png in (cfg.data.dir / "train").iterdir():
        png.unlink()
    with pytest.raises(KitError, match=r"all 15 train images are missing .*data.train_images = 'train/\{id\}.png' under data.dir") as err:
        open_source(cfg)
    assert "skip" not in str(err.value)


def test_an_image_over_the_pixel_limit_is_one_line_before_decoding(tmp_path):
    from PIL import Image

    from kit.data.sources import open_source

    cfg = _layout(tmp_path, max_image_pixels=1000)
    Image.new("L", (40, 30)).save(cfg.data.dir / "train" / "tr000.png")
    Image.new("L", (20, 20)).save(cfg.data.dir / "train" / "tr001.png")
    train = open_source(cfg).train
    assert train.read_image(1).shape == (20, 20)
    with pytest.raises(KitError, match=r"tr000.png: 40x30 = 1200 pixels, more than data.max_image_pixels = 1000"):
        train.read_image(0)


def test_class_names_that_differ_only_by_a_space_are_quoted(tmp_path):
    from kit.data.sources import open_source

    cfg = _layout(tmp_path)
    sample = cfg.data.dir / "sample_submission.csv"
    sample.write_text(sample.read_text().replace("id,A,B,C", "id,A ,B,C"))
    with pytest.raises(KitError, match=r"only in sample_submission: 'A '; only in train: 'A'"):
        open_source(cfg)


def test_temp_files_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    import os
    import time

    from kit.files import STALE_TEMP_SECONDS, atomic_write

    target = tmp_path / "cache" / "train_32.u8"
    target.parent.mkdir()
    stale = target.parent / f".{target.name}.abc123.tmp"
    live = target.parent / f".{target.name}.def456.tmp"  # another process writing right now
    other = target.parent / ".other.u8.x.tmp"
    for path in (stale, live, other):
        path.write_bytes(b"half")
    old = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    atomic_write(target, lambda f: f.write(b"whole"))
    assert target.read_bytes() == b"whole" and not stale.exists() and live.exists() and other.exists()


@pytest.mark.subprocess
def test_sigterm_prints_one_line_and_leaves_no_temp_file(tmp_path):
    import signal
    import subprocess
    import sys

    script = (
        "import sys, time\n"
        "from kit import cli\n"
        "from kit.files import atomic_write\n"
        "def slow(f):\n"
        "    f.write(b'part'); f.flush(); print('writing', flush=True); time.sleep(60)\n"
        "cli.app = lambda: atomic_write(sys.argv[1], slow)\n"
        "cli.main()\n"
    )
    target = tmp_path / "out.bin"
    process = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "writing"
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 143, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("terminated (SIGTERM)") and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_an_empty_competition_slug_is_refused_before_any_folder_is_made(layout, capsys):
    from tests.conftest import assert_one_line_error, run_kit

    root, config = layout
    config.write_text(config.read_text().replace('competition = "fake-comp"', 'competition = ""'))
    before = _files(root)
    for command in (["download"], ["submissions"], ["submit", "-m", "x"]):
        code, _, err = run_kit(["--config", config, *command], capsys)
        assert_one_line_error(code, err, "kaggle.competition is empty", "--competition SLUG")
    assert _files(root) == before
