"""Long-tail recipes and timm-style options: train_prior per recipe, cRT / τ-norm, refused combinations,
the optimizer (fused AdamW's CPU twin, layer decay), gradient accumulation, mixup, drop path, RandAugment."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn

from kit.artifacts import check_against_folds, load_oof
from kit.config import ModelConfig, load_competition, load_model
from kit.data.sources import open_source
from kit.errors import KitError
from kit.models import classifier_of, create_model
from kit.stages.train import train
from kit.training.augment import BatchMixer, build_augment, make_mixer
from kit.training.crt import rebalance_classifier, tau_normalise
from kit.training.heads import NormedLinear, use_cosine_head
from kit.training.losses import check_recipe_for_task, effective_number_weights, recipe_prior
from kit.training.optim import build_optimizer
from kit.training.samplers import sample_weights, sampler_prior, smoothed_class_prior

COUNTS = np.array([400, 100, 25, 5])
LABELS = np.repeat(np.eye(4, dtype=np.uint8), COUNTS, axis=0)
FREQ = smoothed_class_prior(LABELS, "multi-class")  # (n + 0.5) / Σ: the training folds' class frequencies


def _normalised(x: np.ndarray) -> np.ndarray:
    return x / x.sum()


def _prior(epoch: int = 0, **keys) -> np.ndarray:
    mcfg = ModelConfig(name="t", epochs=5, **keys)
    return recipe_prior(LABELS, sample_weights(LABELS, mcfg.sampler_power), mcfg, "multi-class", epoch)


@pytest.mark.parametrize(
    "keys, expected",
    [
        (dict(loss="ce"), FREQ),
        (dict(loss="focal"), FREQ),  # nominal
        (dict(loss="ce", sampler_power=1.0), np.full(4, 0.25)),
        (dict(loss="logit_adjusted", logit_adjust_tau=1.0), np.full(4, 0.25)),
        (dict(loss="logit_adjusted", logit_adjust_tau=0.5), _normalised(FREQ**0.5)),
        (dict(loss="logit_adjusted", logit_adjust_tau=0.0), FREQ),
        (dict(loss="balanced_softmax"), np.full(4, 0.25)),
        (dict(loss="ldam"), FREQ),  # nominal: the margins are not in it
        (dict(loss="focal", class_weights="effective_number", class_weight_beta=0.99), _normalised(FREQ * effective_number_weights(COUNTS, 0.99))),
    ],
)
def test_recipe_prior(keys, expected):
    prior = _prior(**keys)
    np.testing.assert_allclose(prior, expected, rtol=0.02 if keys.get("sampler_power") else 1e-9)
    assert prior.sum() == pytest.approx(1.0)


def test_deferred_reweighting_prior_changes_at_its_epoch():
    keys = dict(loss="ldam", class_weights="effective_number", class_weights_from_epoch=3)
    np.testing.assert_allclose(_prior(2, **keys), FREQ, rtol=1e-9)
    np.testing.assert_allclose(_prior(3, **keys), _normalised(FREQ * effective_number_weights(COUNTS, 0.9999)), rtol=1e-9)


def test_double_rebalancing_when_allowed_records_the_compounded_prior():
    """Sampler power 1 with balanced softmax: batches are uniform and the loss divides by π once more (Ren et al.'s over-balance)."""
    prior = _prior(loss="balanced_softmax", sampler_power=1.0, allow_double_rebalancing=True)
    np.testing.assert_allclose(prior, _normalised(1 / FREQ), rtol=0.02)


@pytest.fixture(scope="module")
def recipe_runs(tiny_competition, tmp_path_factory, variant_run):
    """Three recipes trained on the tiny competition, 3 folds, 2 epochs each."""
    tmp = tmp_path_factory.mktemp("recipes")
    base = dict(sampler_power=0.0, ema_decay=0.0, freeze_epochs=0)
    recipes = {
        "la": dict(loss="logit_adjusted"),
        "ldam_drw": dict(loss="ldam", class_weights="effective_number", class_weights_from_epoch=1, lr=1e-2),
        "crt": dict(crt_epochs=3, ema_decay=0.9),
    }
    for name, keys in recipes.items():
        cfg = variant_run(tiny_competition, tmp, name=name, **{**base, **keys})
    train(cfg, list(recipes), None, resume=False, console=Console(quiet=True))
    return cfg


@pytest.mark.parametrize("name", ["la", "ldam_drw", "crt"])
@pytest.mark.slow
def test_every_recipe_writes_its_train_prior(recipe_runs, name):
    cfg = recipe_runs
    mcfg = load_model(name, cfg)
    source = open_source(cfg)
    oof = load_oof(cfg.paths.oof / f"{name}.npz")
    check_against_folds(oof, cfg.folds.path, name)
    priors = []
    for k in range(cfg.folds.n_folds):
        y_train = source.train.labels[oof.fold != k]
        with np.load(cfg.paths.runs / name / f"fold{k}" / "preds.npz") as z:
            best_epoch = json.loads(str(z["metrics"]))["best_epoch"] - 1
            if name == "crt":
                expected = sampler_prior(y_train, sample_weights(y_train, mcfg.crt_sampler_power), "multi-class")
                np.testing.assert_allclose(expected, np.full(20, 0.05), atol=0.01)  # class-balanced: near uniform
            else:
                expected = recipe_prior(y_train, sample_weights(y_train, 0.0), mcfg, "multi-class", best_epoch)
            if name == "la":
                np.testing.assert_allclose(expected, np.full(20, 0.05), rtol=1e-9)
            np.testing.assert_allclose(z["train_prior"], expected, rtol=1e-9)
            priors.append(z["train_prior"])
    np.testing.assert_allclose(oof.train_prior, np.mean(priors, axis=0), rtol=1e-12)


@pytest.mark.slow
def test_crt_keeps_the_oof_contract_with_new_held_out_logits(recipe_runs):
    """After cRT every OOF row still comes from its own fold's model, and those logits are the new head's."""
    cfg = recipe_runs
    oof = load_oof(cfg.paths.oof / "crt.npz")
    position = {i: r for r, i in enumerate(oof.ids.tolist())}
    for k in range(cfg.folds.n_folds):
        run = cfg.paths.runs / "crt" / f"fold{k}"
        with np.load(run / "preds.npz") as z:
            rows = [position[i] for i in z["val_ids"].tolist()]
            assert np.array_equal(oof.logits[rows], z["val_logits"])
            assert (oof.fold[rows] == k).all()
        before = torch.load(run / "best.pt", weights_only=True)["val_logits"].numpy()
        assert not np.allclose(before, oof.logits[rows], atol=1e-3)  # the re-trained head predicts differently


@pytest.mark.slow
def test_ldam_variant_has_a_cosine_head(recipe_runs):
    cfg = recipe_runs
    state = torch.load(cfg.paths.runs / "ldam_drw" / "fold0" / "best.pt", weights_only=True)["model"]
    assert state["fc.weight"].shape == (2 * 8 * 2, 20)  # NormedLinear keeps (in, out), nn.Linear (out, in)


def _tiny_model(**keys) -> tuple[nn.Module, ModelConfig]:
    mcfg = ModelConfig(name="t", backbone="chestmnist_cnn", pretrained=False, image_size=16, in_chans=1, cnn_width=8, batch_size=16, **keys)
    torch.manual_seed(0)
    return create_model(mcfg, 4), mcfg


def test_crt_changes_only_the_head():
    model, mcfg = _tiny_model(crt_epochs=2, crt_lr=1e-2)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (80, 16, 16), dtype=np.uint8)
    y = np.eye(4, dtype=np.uint8)[np.repeat([0, 0, 0, 1, 1, 2, 3, 3], 10)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    head_keys = {f"fc.{k}" for k in classifier_of(model).state_dict()}
    prior = rebalance_classifier(model, images, np.arange(80), y, mcfg, "multi-class", device=torch.device("cpu"), seed=0, console=Console(quiet=True))
    after = model.state_dict()
    for key, value in before.items():
        if key in head_keys:
            assert not torch.equal(value, after[key]), key
        else:
            assert torch.equal(value, after[key]), key  # weights and BN running statistics alike
    np.testing.assert_allclose(prior, np.full(4, 0.25), atol=0.01)  # power 1: class-balanced


def test_tau_norm_equalises_class_weight_norms():
    model, _ = _tiny_model()
    head = classifier_of(model)
    with torch.no_grad():
        head.weight.mul_(torch.tensor([[1.0], [3.0], [0.5], [2.0]]))
    backbone = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    tau_normalise(model, 1.0)
    np.testing.assert_allclose(head.weight.norm(dim=1).detach().numpy(), np.ones(4), rtol=1e-6)
    assert torch.equal(head.bias, torch.zeros(4))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in backbone.items())
    norms = torch.tensor([1.0, 4.0])
    half = nn.Linear(2, 2)
    with torch.no_grad():
        half.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 4.0]]))
    holder = nn.Module()
    holder.fc = half
    holder.get_classifier = lambda: half
    tau_normalise(holder, 0.5)
    np.testing.assert_allclose(half.weight.norm(dim=1).detach().numpy(), (norms**0.5).numpy(), rtol=1e-6)  # ‖w‖^(1 − τ)


def test_cosine_head_outputs_scaled_cosines():
    model, mcfg = _tiny_model(loss="ldam", ldam_scale=30.0)
    use_cosine_head(model, mcfg)
    head = classifier_of(model)
    assert isinstance(head, NormedLinear)
    x = torch.randn(5, head.in_features)
    out = head(x)
    cos = torch.nn.functional.cosine_similarity(x[:, :, None], head.weight[None], dim=1)
    torch.testing.assert_close(out, 30.0 * cos, rtol=1e-5, atol=1e-5)


REFUSED = [
    (dict(sampler_power=0.5, class_weights="effective_number"), "'sampler_power' and 'class_weights'"),
    (dict(sampler_power=1.0, loss="balanced_softmax"), "'sampler_power' and 'loss'"),
    (dict(sampler_power=0.5, loss="logit_adjusted"), "'sampler_power' and 'loss'"),
    (dict(crt_epochs=5, tau_norm=1.0), "'crt_epochs' and 'tau_norm'"),
    (dict(loss="ldam", tau_norm=1.0), "'tau_norm'"),
    (dict(loss="bce", class_weights="effective_number"), "'class_weights'"),
    (dict(mixup_alpha=0.8, batch_size=31), "'batch_size'"),
    (dict(backbone="chestmnist_cnn", drop_path_rate=0.1), "'drop_path_rate'"),
    (dict(backbone="chestmnist_cnn", layer_decay=0.8), "'layer_decay'"),
    (dict(class_weights="effective_number", class_weights_from_epoch=12, epochs=12), "'class_weights_from_epoch'"),
]


@pytest.mark.parametrize("keys, named", REFUSED)
def test_refused_combinations_give_one_line_at_load(tiny_competition, tmp_path, variant_run, keys, named):
    cfg = variant_run(tiny_competition, tmp_path, name="bad", **{"sampler_power": 0.0, **keys})
    with pytest.raises(KitError) as err:
        load_model("bad", cfg)
    message = str(err.value)
    assert "\n" not in message and named in message and "bad.toml" in message


def test_double_rebalancing_is_allowed_with_its_key():
    ModelConfig(sampler_power=0.5, class_weights="effective_number", allow_double_rebalancing=True)
    ModelConfig(sampler_power=0.5, loss="focal")  # focal does not re-balance: allowed (efficientnet_b0_256)


def test_refused_combination_exits_2_with_one_line(tiny_competition, tmp_path, variant_run, monkeypatch, capsys):
    from kit.cli import main

    cfg = variant_run(tiny_competition, tmp_path, name="double", sampler_power=1.0, class_weights="effective_number")
    text = tiny_competition.config_path.read_text().replace(f'models = "{tiny_competition.cfg.paths.models}"', f'models = "{cfg.paths.models}"')
    assert str(cfg.paths.models) in text
    (tmp_path / "competition.toml").write_text(text)
    monkeypatch.setattr(sys, "argv", ["kit", "--config", str(tmp_path / "competition.toml"), "train", "--variant", "double"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "double.toml" in err and "allow_double_rebalancing" in err


@pytest.mark.parametrize("keys", [dict(loss="logit_adjusted"), dict(loss="ldam"), dict(loss="bce", tau_norm=1.0)])
def test_softmax_recipes_refused_for_multi_label(keys):
    with pytest.raises(KitError, match="multi-label"):
        check_recipe_for_task(ModelConfig(name="t", **keys), "multi-label", "comp.toml")


def test_model_a_and_b_keep_the_reports_weighted_sampler():
    repo = Path(__file__).resolve().parent.parent
    cfg = load_competition(repo / "configs" / "competition.toml")
    cfg = cfg.model_copy(update={"paths": cfg.paths.model_copy(update={"models": repo / "configs" / "models"})})
    for name in ("convnext_tiny_224", "convnext_tiny_256"):
        mcfg = load_model(name, cfg)
        assert mcfg.sampler_power == 1.0 and mcfg.loss == "ce" and mcfg.class_weights == "none"


def test_fused_adamw_cpu_twin_matches_the_plain_step():
    """build_optimizer asks for fused AdamW on CUDA; torch's fused CPU kernel is its twin here."""
    model, mcfg = _tiny_model(lr=1e-2, weight_decay=0.05)
    twin = create_model(mcfg, 4)
    twin.load_state_dict(model.state_dict())
    fused = build_optimizer(model, mcfg, torch.device("cpu"), fused=True)
    plain = torch.optim.AdamW(twin.parameters(), lr=1e-2, weight_decay=0.05)
    assert fused.defaults["fused"] is True and len(fused.param_groups) == 1
    assert not build_optimizer(model, mcfg, torch.device("cpu")).defaults.get("fused")  # the default on CPU
    x = torch.randn(8, 1, 16, 16)
    for m, opt in ((model, fused), (twin, plain)):
        m.train()
        torch.manual_seed(1)
        m(x).square().mean().backward()
        opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_layer_decay_scales_learning_rate_by_depth():
    import timm

    mcfg = ModelConfig(name="t", backbone="test_resnet", pretrained=False, lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    model = timm.create_model("test_resnet", num_classes=4)
    optimizer = build_optimizer(model, mcfg, torch.device("cpu"))
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert lr_of[id(model.fc.weight)] == pytest.approx(1e-3)  # the head: full lr
    assert lr_of[id(model.conv1[0].weight)] < lr_of[id(model.layer4[0].conv1.weight)] < 1e-3
    lrs = sorted({round(v / 1e-3, 12) for v in lr_of.values()})
    assert all(b / a == pytest.approx(2.0) for a, b in zip(lrs, lrs[1:]))  # one factor 0.5 per layer group
    assert decay_of[id(model.fc.bias)] == 0.0 and decay_of[id(model.fc.weight)] == 0.05


def test_gradient_accumulation_equals_one_large_batch():
    from kit.training.device import pick_precision
    from kit.training.trainer import Trainer

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 256, (16, 1, 8, 8), dtype=np.uint8))
    y = torch.from_numpy(np.eye(3, dtype=np.uint8)[rng.integers(0, 3, 16)])
    results = []
    for accum, batches in ((1, [(x, y)]), (2, [(x[:8], y[:8]), (x[8:], y[8:])]), (4, [(x[i : i + 4], y[i : i + 4]) for i in range(0, 16, 4)])):
        mcfg = ModelConfig(name="t", in_chans=1, channels_last=False, grad_clip=0.0, grad_accum_steps=accum, lr=1e-2, scheduler="plateau")
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        scaler = torch.amp.GradScaler("cuda", enabled=False)
        before = [p.detach().clone() for p in model.parameters()]

        def loss_fn(logits, t):
            return torch.nn.functional.cross_entropy(logits, t.argmax(1))

        cpu = torch.device("cpu")
        trainer = Trainer(
            mcfg=mcfg, device=cpu, task="multi-class", model=model, step_model=model, ema=None, optimizer=optimizer, scheduler=None,
            scaler=scaler, precision=pick_precision(cpu, False), loss_fn=loss_fn,
        )
        trainer.train_epoch(batches, console=Console(quiet=True), description="t")
        assert optimizer.state[model[1].weight]["step"] == 1  # one optimizer step for the whole group
        assert not torch.equal(before[0], model[1].weight)
        results.append([p.detach().clone() for p in model.parameters()])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_mixer_is_seeded_soft_and_leaves_numpy_global_state_alone():
    mcfg = ModelConfig(name="t", mixup_alpha=0.8, cutmix_alpha=1.0)
    assert make_mixer(ModelConfig(name="t"), 3, "multi-class", 0) is None
    x = torch.randn(8, 1, 16, 16)
    y = torch.from_numpy(np.eye(3, dtype=np.uint8)[[0, 1, 2, 0, 1, 2, 0, 1]])
    np.random.seed(123)
    outer = np.random.get_state()[1].copy()
    a_x, a_t = BatchMixer(mcfg, 3, "multi-class", seed=7)(x.clone(), y)
    b_x, b_t = BatchMixer(mcfg, 3, "multi-class", seed=7)(x.clone(), y)
    assert np.array_equal(np.random.get_state()[1], outer)
    assert torch.equal(a_x, b_x) and torch.equal(a_t, b_t)
    assert not torch.equal(a_x, x) and a_t.dtype == torch.float32
    torch.testing.assert_close(a_t.sum(1), torch.ones(8))
    assert ((a_t > 0) & (a_t < 1)).any()  # soft targets
    multi = (torch.rand(8, 5) < 0.3).to(torch.uint8)
    _, m_t = BatchMixer(mcfg, 5, "multi-label", seed=7)(x.clone(), multi)
    assert m_t.shape == (8, 5) and ((m_t >= 0) & (m_t <= 1)).all()
    odd_x, odd_t = BatchMixer(mcfg, 3, "multi-class", seed=7)(x[:7].clone(), y[:7])
    assert torch.equal(odd_x, x[:7]) and torch.equal(odd_t, y[:7].float())


def test_drop_path_reaches_the_timm_backbone():
    mcfg = ModelConfig(name="t", backbone="test_resnet", pretrained=False, drop_path_rate=0.2)
    rates = [m.drop_prob for m in create_model(mcfg, 4).modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.2, abs=0.05)
    plain = ModelConfig(name="t", backbone="test_resnet", pretrained=False)
    assert not [m for m in create_model(plain, 4).modules() if type(m).__name__ == "DropPath"]


def test_randaugment_level_is_seeded_and_grows_with_magnitude():
    rng = np.random.default_rng(0)
    image = np.zeros((32, 32), dtype=np.uint8)
    image[8:24, 10:22] = rng.integers(100, 255, (16, 12), dtype=np.uint8)
    assert build_augment("none", randaugment_magnitude=0) is None
    change = {}
    for magnitude in (3, 20):
        pipeline = build_augment("none", randaugment_magnitude=magnitude, randaugment_ops=2)
        outs = []
        for seed in range(40):
            pipeline.set_random_seed(seed)
            outs.append(pipeline(image=image)["image"])
        pipeline.set_random_seed(5)
        assert np.array_equal(pipeline(image=image)["image"], outs[5])  # same seed, same image
        assert outs[0].shape == image.shape and outs[0].dtype == np.uint8
        change[magnitude] = float(np.mean([np.abs(o.astype(int) - image).mean() for o in outs]))
    assert 0 < change[3] < change[20]


@pytest.mark.slow
def test_all_options_together_train_a_timm_backbone(tiny_competition, tmp_path, variant_run):
    """mixup + cutmix, drop path, grad accumulation, layer decay and RandAugment in one real (tiny) run."""
    cfg = variant_run(
        tiny_competition, tmp_path, name="timm_opts", backbone="test_resnet", in_chans=3, image_size=32, epochs=1,
        sampler_power=0.0, freeze_epochs=0, ema_decay=0.0, batch_size=16, mixup_alpha=0.4, cutmix_alpha=1.0,
        drop_path_rate=0.1, grad_accum_steps=2, layer_decay=0.7, randaugment_magnitude=9, tau_norm=1.0,
    )
    train(cfg, ["timm_opts"], [0], resume=False, console=Console(quiet=True))
    with np.load(cfg.paths.runs / "timm_opts" / "fold0" / "preds.npz") as z:
        assert np.isfinite(z["val_logits"]).all() and np.isfinite(z["test_logits"]).all()
        np.testing.assert_allclose(z["train_prior"], np.full(20, 0.05))  # τ-norm: nominal uniform


@pytest.mark.slow
def test_mixup_and_randaugment_runs_resume_to_the_same_logits(tiny_competition, tmp_path, variant_run):
    """The mixer and RandAugment draw from per-epoch seeded streams: an interrupted run resumes to the same bytes."""
    keys = dict(
        name="mix", epochs=2, sampler_power=0.0, ema_decay=0.0, freeze_epochs=0, augment="none", mixup_alpha=0.4,
        cutmix_alpha=1.0, randaugment_magnitude=9, grad_accum_steps=2,
    )
    runs = {}
    for kind in ("full", "resumed"):
        (tmp_path / kind).mkdir()
        cfg = variant_run(tiny_competition, tmp_path / kind, **keys)
        if kind == "resumed":
            train(cfg, ["mix"], [0], resume=False, stop_after_epoch=1, console=Console(quiet=True))
            assert not (cfg.paths.runs / "mix" / "fold0" / "preds.npz").exists()
        train(cfg, ["mix"], [0], resume=kind == "resumed", console=Console(quiet=True))
        with np.load(cfg.paths.runs / "mix" / "fold0" / "preds.npz") as z:
            runs[kind] = (z["val_logits"], z["test_logits"])
    assert np.array_equal(runs["full"][0], runs["resumed"][0]) and np.array_equal(runs["full"][1], runs["resumed"][1])


@pytest.mark.slow
def test_crt_on_multi_label_records_the_sampler_positive_rates(tiny_chestmnist, tmp_path, variant_run):
    cfg = variant_run(
        tiny_chestmnist, tmp_path, name="ml_crt", image_size=28, loss="bce", epochs=1, sampler_power=0.0, freeze_epochs=0,
        ema_decay=0.0, crt_epochs=2, crt_sampler_power=0.5,
    )
    train(cfg, ["ml_crt"], [0], resume=False, console=Console(quiet=True))
    source = open_source(cfg)
    from kit.data.folds import load_fold_assignment

    fold_of = load_fold_assignment(cfg, source.train.ids)
    y_train = source.train.labels[fold_of != 0]
    expected = sampler_prior(y_train, sample_weights(y_train, 0.5), "multi-label")
    with np.load(cfg.paths.runs / "ml_crt" / "fold0" / "preds.npz") as z:
        np.testing.assert_allclose(z["train_prior"], expected, rtol=1e-9)
        assert np.isfinite(z["val_logits"]).all()
    assert (expected > y_train.mean(axis=0) - 1e-9).sum() >= 10  # the sampler raised most positive rates
