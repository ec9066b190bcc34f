"""Each training loss against a value computed by hand (plain Python math) on a two-image batch."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kit.config import ModelConfig
from kit.errors import KitError
from kit.training.losses import effective_number_weights, ldam_margins, make_loss, softmax_cross_entropy

# two images, three classes; training labels with 6 / 3 / 1 images per class
LOGITS = [[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]]
TRUE = [0, 2]
COUNTS = [6, 3, 1]
FREQ = [(n + 0.5) / 11.5 for n in COUNTS]  # the training folds' class frequencies (pseudo-count 0.5, as the sampler's prior)


def _labels(counts) -> np.ndarray:
    return np.repeat(np.eye(len(counts), dtype=np.uint8), counts, axis=0)


def _batch():
    return torch.tensor(LOGITS), torch.from_numpy(np.eye(3, dtype=np.uint8)[TRUE])


def _loss(**keys) -> float:
    mcfg = ModelConfig(name="t", label_smoothing=0.0, **keys)
    logits, y = _batch()
    return float(make_loss(mcfg, "multi-class", _labels(COUNTS), torch.device("cpu"))(logits, y))


def _ce_row(z, k, shift=(0.0, 0.0, 0.0)) -> float:
    zs = [a + b for a, b in zip(z, shift)]
    return math.log(sum(math.exp(v) for v in zs)) - zs[k]


def test_ce_by_hand_and_as_torch():
    expected = (_ce_row(LOGITS[0], 0) + _ce_row(LOGITS[1], 2)) / 2  # (0.40761 + 1.45802) / 2
    assert _loss(loss="ce") == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.93281, abs=1e-5)
    logits, y = _batch()
    assert _loss(loss="ce") == pytest.approx(float(F.cross_entropy(logits, torch.tensor(TRUE))), abs=1e-6)


def test_label_smoothing_by_hand():
    eps = 0.1
    rows = []
    for z, k in zip(LOGITS, TRUE):
        lse = math.log(sum(math.exp(v) for v in z))
        rows.append((1 - eps) * (lse - z[k]) + eps * sum(lse - v for v in z) / 3)
    mcfg = ModelConfig(name="t", loss="ce", label_smoothing=eps)
    logits, y = _batch()
    value = float(make_loss(mcfg, "multi-class", _labels(COUNTS), torch.device("cpu"))(logits, y))
    assert value == pytest.approx(sum(rows) / 2, abs=1e-6)
    assert value == pytest.approx(float(F.cross_entropy(logits, torch.tensor(TRUE), label_smoothing=eps)), abs=1e-6)


def test_focal_by_hand():
    rows = []
    for z, k in zip(LOGITS, TRUE):
        p = math.exp(z[k]) / sum(math.exp(v) for v in z)
        rows.append(-((1 - p) ** 2) * math.log(p))
    assert _loss(loss="focal", focal_gamma=2.0) == pytest.approx(sum(rows) / 2, abs=1e-6)


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_logit_adjusted_by_hand(tau):
    shift = [tau * math.log(f) for f in FREQ]
    expected = (_ce_row(LOGITS[0], 0, shift) + _ce_row(LOGITS[1], 2, shift)) / 2
    assert _loss(loss="logit_adjusted", logit_adjust_tau=tau) == pytest.approx(expected, abs=1e-6)


def test_balanced_softmax_by_hand():
    shift = [math.log(n + 0.5) for n in COUNTS]  # log n_c up to a constant, which softmax ignores
    expected = (_ce_row(LOGITS[0], 0, shift) + _ce_row(LOGITS[1], 2, shift)) / 2
    assert _loss(loss="balanced_softmax") == pytest.approx(expected, abs=1e-6)


def test_logit_adjustment_is_ce_at_tau_zero_and_balanced_softmax_is_ce_for_uniform_counts():
    assert _loss(loss="logit_adjusted", logit_adjust_tau=0.0) == pytest.approx(_loss(loss="ce"), abs=1e-7)
    logits, y = _batch()
    uniform = _labels([4, 4, 4])
    for loss in ("balanced_softmax", "logit_adjusted"):
        mcfg = ModelConfig(name="t", loss=loss, label_smoothing=0.0)
        value = float(make_loss(mcfg, "multi-class", uniform, torch.device("cpu"))(logits, y))
        assert value == pytest.approx(_loss(loss="ce"), abs=1e-6)


def test_ldam_margins_and_loss_by_hand():
    quarter = [n**-0.25 for n in COUNTS]
    margins = [0.5 * q / max(quarter) for q in quarter]  # the rarest class (n = 1) gets max_margin 0.5
    np.testing.assert_allclose(ldam_margins(np.array(COUNTS, float), 0.5), margins, rtol=1e-12)
    s = 30.0
    rows = []
    for z, k in zip(LOGITS, TRUE):
        shifted = [v - (s * margins[k] if c == k else 0.0) for c, v in enumerate(z)]
        rows.append(_ce_row(shifted, k))
    assert _loss(loss="ldam", ldam_scale=s, ldam_max_margin=0.5) == pytest.approx(sum(rows) / 2, abs=1e-5)


def test_effective_number_weights_by_hand():
    beta = 0.9
    raw = [(1 - beta) / (1 - beta**n) for n in COUNTS]
    expected = [3 * w / sum(raw) for w in raw]  # normalised to sum to C = 3
    np.testing.assert_allclose(effective_number_weights(np.array(COUNTS, float), beta), expected, rtol=1e-12)
    ce = [_ce_row(LOGITS[0], 0), _ce_row(LOGITS[1], 2)]
    weighted = (expected[0] * ce[0] + expected[2] * ce[1]) / (expected[0] + expected[2])
    assert _loss(loss="ce", class_weights="effective_number", class_weight_beta=beta) == pytest.approx(weighted, abs=1e-6)
    logits, _ = _batch()
    torch_value = F.cross_entropy(logits, torch.tensor(TRUE), weight=torch.tensor(expected, dtype=torch.float32))
    assert weighted == pytest.approx(float(torch_value), abs=1e-6)


def test_class_balanced_focal_by_hand():
    beta, gamma = 0.99, 1.0
    w = effective_number_weights(np.array(COUNTS, float), beta)
    num, den = 0.0, 0.0
    for z, k in zip(LOGITS, TRUE):
        p = math.exp(z[k]) / sum(math.exp(v) for v in z)
        num += w[k] * -((1 - p) ** gamma) * math.log(p)
        den += w[k]
    assert _loss(loss="focal", focal_gamma=gamma, class_weights="effective_number", class_weight_beta=beta) == pytest.approx(num / den, abs=1e-6)


def test_deferred_reweighting_starts_at_its_epoch():
    keys = dict(loss="ce", label_smoothing=0.0, class_weights="effective_number", class_weight_beta=0.9, class_weights_from_epoch=3, epochs=5)
    mcfg = ModelConfig(name="t", **keys)
    logits, y = _batch()
    labels = _labels(COUNTS)
    before = float(make_loss(mcfg, "multi-class", labels, torch.device("cpu"), epoch=2)(logits, y))
    after = float(make_loss(mcfg, "multi-class", labels, torch.device("cpu"), epoch=3)(logits, y))
    assert before == pytest.approx(_loss(loss="ce"), abs=1e-7)
    assert after == pytest.approx(_loss(loss="ce", class_weights="effective_number", class_weight_beta=0.9), abs=1e-7)
    assert before != pytest.approx(after, abs=1e-3)


def test_soft_targets_are_linear_in_the_mixing_weight():
    """Mixup's soft targets: CE (and every recipe built on it) of λ·y1 + (1 − λ)·y2 is λ·CE(y1) + (1 − λ)·CE(y2)."""
    logits = torch.tensor(LOGITS)
    y1, y2 = torch.eye(3)[[0, 2]], torch.eye(3)[[1, 1]]
    lam = 0.3
    mixed = softmax_cross_entropy(logits, lam * y1 + (1 - lam) * y2)
    assert float(mixed) == pytest.approx(lam * float(softmax_cross_entropy(logits, y1)) + (1 - lam) * float(softmax_cross_entropy(logits, y2)), abs=1e-6)
    for loss in ("logit_adjusted", "balanced_softmax", "ldam"):
        fn = make_loss(ModelConfig(name="t", loss=loss, label_smoothing=0.0), "multi-class", _labels(COUNTS), torch.device("cpu"))
        if loss != "ldam":  # LDAM's margin moves with the target, so it is not linear in λ; it must still be finite
            assert float(fn(logits, lam * y1 + (1 - lam) * y2)) == pytest.approx(lam * float(fn(logits, y1)) + (1 - lam) * float(fn(logits, y2)), abs=1e-5)
        assert torch.isfinite(fn(logits, lam * y1 + (1 - lam) * y2))


@pytest.mark.slow
def test_a_loss_registered_in_a_test_trains_by_name_from_a_variant_toml(tiny_run, tmp_path, monkeypatch):
    """Adding a loss is one decorated function: its name is then valid in a variant's TOML and trains."""
    from rich.console import Console

    from kit.paths import run_dir
    from kit.stages.train import train
    from kit.training.losses import LOSSES, LossContext, register_loss, softmax_family

    monkeypatch.setattr(LOSSES, "_items", dict(LOSSES._items))  # the registration ends with the test
    built: list[LossContext] = []

    @register_loss("squared_margin_ce", prior_note="test loss")
    def squared_margin_ce(ctx: LossContext):
        built.append(ctx)
        return softmax_family(ctx, gamma=0.5)

    cfg = tiny_run(tmp_path, loss="squared_margin_ce", sampler_power=0.0, epochs=1)
    train(cfg, ["tiny"], [0], resume=False, console=Console(quiet=True))
    summary = json.loads(str(np.load(run_dir(cfg, "tiny", 0) / "preds.npz")["metrics"]))
    assert built and built[0].mcfg.loss == "squared_margin_ce" and built[0].task == "multi-class"
    assert "test loss" in summary["train_prior_basis"]


def test_an_unknown_loss_in_a_variant_toml_is_one_line_naming_the_choices(tiny_run, tmp_path):
    from kit.config import load_model

    cfg = tiny_run(tmp_path, loss="no_such_loss")
    with pytest.raises(KitError, match=r"tiny.toml: key 'loss': .*unknown loss 'no_such_loss'; use one of \['ce', 'focal'"):
        load_model("tiny", cfg)
