"""Training losses and the class distribution each one calibrates the logits to (`train_prior`).

Every loss is `loss(logits, targets)` with targets (B, C): one-hot or multi-hot uint8, or soft float
targets after mixup. The softmax recipes share one cross-entropy (:func:`softmax_cross_entropy`)
and differ only in what they do to the logits or the per-class weights:

- ``ce``: plain softmax cross-entropy (with label smoothing).
- ``focal``: focal loss, Lin et al. 2017 (label smoothing is not applied to it).
- ``logit_adjusted``: logit-adjusted loss, Menon et al. 2021: CE on ``logit + τ·log π_c``.
- ``balanced_softmax``: balanced softmax, Ren et al. 2020: CE on ``logit + log n_c`` (τ = 1 above).
- ``ldam``: label-distribution-aware margin loss, Cao et al. 2019: CE on ``s·cos − s·m_y`` for the true
  class, margin ``m_c ∝ n_c^(−1/4)``, with a cosine head (:class:`kit.training.heads.NormedLinear`).
- ``class_weights = "effective_number"``: class-balanced weights, Cui et al. 2019,
  ``w_c ∝ (1 − β)/(1 − β^n_c)``; with ``class_weights_from_epoch`` they start late (deferred
  re-weighting, DRW, Cao et al. 2019). ``focal`` + these weights is Cui's class-balanced focal loss.
- ``bce``: per-label binary CE with ``pos_weight`` (multi-label).

Each loss is one function registered in `LOSSES` (`kit.registry.Registry`) with `@register_loss(name, ...)`:
`fn(ctx: LossContext) -> loss(logits, targets)`, and the facts the rest of the kit asks of it (which tasks it
trains, whether it re-balances the classes itself, the logit offset `train_prior` must undo, whether it needs
LDAM's cosine head). `ModelConfig.loss` is checked against `LOSSES.names()`; adding a loss is one decorated
function here (and its test).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from kit.config import ModelConfig, model_file, recipe_task_conflict
from kit.errors import KitError
from kit.registry import Registry
from kit.training.samplers import PRIOR_FLOOR, sampler_prior, smoothed_class_prior

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LossContext:
    """What a loss is built from: the variant, the task, the training rows' labels, the device and the epoch
    (deferred re-weighting changes the loss from an epoch on)."""

    mcfg: ModelConfig
    task: str
    train_labels: np.ndarray
    device: torch.device
    epoch: int = 0


@dataclass(frozen=True)
class Loss:
    """One registered loss: its builder and what the rest of the kit needs to know of it."""

    build: Callable[[LossContext], LossFn]
    tasks: tuple[str, ...] = ("multi-class",)  # the tasks it trains (a softmax loss: multi-class only)
    rebalancing: bool = False  # re-balances the classes itself: compounds with a re-weighting sampler
    exact_prior: bool = True  # False: `recipe_prior` is nominal for it (focusing or margins are not in it)
    cosine_head: bool = False  # trains LDAM's cosine head (`kit.training.heads.use_cosine_head`)
    label_weights: bool = False  # weights each label itself (pos_weight): class_weights do not apply
    offset_tau: Callable[[ModelConfig], float] | None = None  # adds τ·log π to the logits (logit adjustment)
    prior_note: str = ""  # what it does to `train_prior`, for the OOF json's `train_prior_basis`


LOSSES: Registry[Loss] = Registry("loss")


def register_loss(name: str, **facts) -> Callable[[Callable[[LossContext], LossFn]], Callable[[LossContext], LossFn]]:
    """Decorator: `fn(ctx) -> loss(logits, targets)` becomes the loss `name` (facts: the fields of `Loss`)."""

    def wrap(fn: Callable[[LossContext], LossFn]) -> Callable[[LossContext], LossFn]:
        LOSSES.add(name, Loss(build=fn, **facts))
        return fn

    return wrap


def loss_of(mcfg: ModelConfig) -> Loss:
    """The variant's registered loss (an unknown name is one line naming its file)."""
    return LOSSES.get(mcfg.loss, where=f"{model_file(mcfg)}: key 'loss'")


def bce_pos_weight(labels: np.ndarray, clip: float) -> np.ndarray:
    """neg/pos per class clipped at `clip` (the published ChestMNIST recipe)."""
    labels = np.asarray(labels, dtype=np.float64)
    pos = labels.sum(axis=0)
    return np.clip((len(labels) - pos) / np.maximum(pos, 1.0), 1.0, clip)


def loss_prior(prior: np.ndarray, mcfg: ModelConfig, pos_weight: np.ndarray | None) -> np.ndarray:
    """BCE with pos_weight w trains the sigmoid on odds multiplied by w: fold that into the prior."""
    if not loss_of(mcfg).label_weights or pos_weight is None:
        return prior
    odds = prior / (1 - prior) * pos_weight
    return np.clip(odds / (1 + odds), 1e-6, 1 - 1e-6)


def class_counts(labels: np.ndarray) -> np.ndarray:
    """Images per class in the training folds, floored at PRIOR_FLOOR so logs and weights stay finite."""
    return np.maximum(np.asarray(labels, dtype=np.float64).sum(axis=0), PRIOR_FLOOR)


def effective_number_weights(counts: np.ndarray, beta: float) -> np.ndarray:
    """Cui et al. 2019: w_c = (1 − β)/(1 − β^n_c), normalised to sum to C (β = 0: all ones)."""
    counts = np.asarray(counts, dtype=np.float64)
    weights = (1.0 - beta) / (1.0 - np.power(beta, counts))
    return weights / weights.sum() * len(counts)


def class_weights_at(counts: np.ndarray, mcfg: ModelConfig, epoch: int) -> np.ndarray | None:
    """The per-class loss weights in effect at `epoch` (None: unweighted), DRW included."""
    if mcfg.class_weights == "none" or epoch < mcfg.class_weights_from_epoch:
        return None
    return effective_number_weights(counts, mcfg.class_weight_beta)


def ldam_margins(counts: np.ndarray, max_margin: float) -> np.ndarray:
    """Cao et al. 2019: m_c ∝ n_c^(−1/4), scaled so the rarest class gets `max_margin`."""
    margins = np.asarray(counts, dtype=np.float64) ** -0.25
    return margins * (max_margin / margins.max())


def logit_offset(frequencies: np.ndarray, mcfg: ModelConfig) -> np.ndarray | None:
    """What the loss adds to every logit: τ·log π (logit-adjusted) or log π (balanced softmax, the same
    up to a constant as log n_c); None for the other losses. π: the training folds' class frequencies
    (`samplers.smoothed_class_prior`, the same pseudo-count as the sampler's prior, so τ = 1 gives exactly uniform)."""
    offset_tau = loss_of(mcfg).offset_tau
    return None if offset_tau is None else offset_tau(mcfg) * np.log(frequencies)


def softmax_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    class_weight: torch.Tensor | None = None,
    gamma: float = 0.0,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """−Σ_c t_c·w_c·(1 − p_c)^γ·log p_c, averaged with weights Σ_c t_c·w_c per row (PyTorch's weighted mean).

    Targets may be soft; label smoothing mixes them with the uniform distribution first. With hard
    targets, w = None and γ = 0 this is `F.cross_entropy(logits, y, label_smoothing=...)`.
    """
    t = targets.float()
    if label_smoothing:
        t = t * (1.0 - label_smoothing) + label_smoothing / t.shape[1]
    log_p = F.log_softmax(logits.float(), dim=1)
    per_class = -t * log_p
    if gamma:
        per_class = per_class * (1.0 - log_p.exp()) ** gamma
    if class_weight is None:
        return per_class.sum(dim=1).mean()
    return (per_class * class_weight).sum() / (t * class_weight).sum()


def make_loss(mcfg: ModelConfig, task: str, train_labels: np.ndarray, device: torch.device, epoch: int = 0) -> LossFn:
    """loss(logits, targets) for the configured recipe as it stands at `epoch` (DRW changes weights)."""
    if task == "multi-label":  # a variant is refused at load for its competition's task; this guards direct calls
        check_recipe_for_task(mcfg, task)
    return loss_of(mcfg).build(LossContext(mcfg, task, train_labels, device, epoch))


def softmax_family(ctx: LossContext, *, gamma: float = 0.0, smoothing: float | None = None, margins: bool = False) -> LossFn:
    """The softmax losses' one cross-entropy: the variant's class weights (DRW included), the registered logit
    offset (τ·log π), LDAM's margins when `margins`, focusing `gamma`, label smoothing (default: the variant's)."""
    mcfg, device = ctx.mcfg, ctx.device
    counts = class_counts(ctx.train_labels)

    def tensor(values: np.ndarray | None) -> torch.Tensor | None:
        return None if values is None else torch.tensor(values, dtype=torch.float32, device=device)

    weight = tensor(class_weights_at(counts, mcfg, ctx.epoch))
    offset = tensor(logit_offset(smoothed_class_prior(ctx.train_labels, ctx.task), mcfg))
    margin = tensor(mcfg.ldam_scale * ldam_margins(counts, mcfg.ldam_max_margin)) if margins else None
    smoothing = mcfg.label_smoothing if smoothing is None else smoothing

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = logits.float()
        if offset is not None:
            z = z + offset
        if margin is not None:  # the head already outputs s·cos; the margin is s·m_c on the true class
            z = z - margin * y.float()
        return softmax_cross_entropy(z, y, weight, gamma, smoothing)

    return loss


@register_loss("ce")
def ce(ctx: LossContext) -> LossFn:
    return softmax_family(ctx)


@register_loss("focal", tasks=("multi-class", "multi-label"), exact_prior=False)
def focal(ctx: LossContext) -> LossFn:
    """Lin et al. 2017; label smoothing is not applied to it. Multi-label: per-label focal BCE."""
    gamma = ctx.mcfg.focal_gamma
    if ctx.task != "multi-label":
        return softmax_family(ctx, gamma=gamma, smoothing=0.0)

    def multi_label_focal(logits, y):
        bce = F.binary_cross_entropy_with_logits(logits.float(), y.float(), reduction="none")
        return ((1 - torch.exp(-bce)) ** gamma * bce).mean()

    return multi_label_focal


@register_loss("bce", tasks=("multi-label",), label_weights=True, prior_note="× pos_weight odds (BCE)")
def bce(ctx: LossContext) -> LossFn:
    """Per-label binary CE with `pos_weight` (neg/pos clipped at `pos_weight_clip`)."""
    pos_weight = torch.tensor(bce_pos_weight(ctx.train_labels, ctx.mcfg.pos_weight_clip), dtype=torch.float32, device=ctx.device)
    return lambda logits, y: F.binary_cross_entropy_with_logits(logits.float(), y.float(), pos_weight=pos_weight)


@register_loss(
    "logit_adjusted", rebalancing=True, offset_tau=lambda mcfg: mcfg.logit_adjust_tau,
    prior_note="÷ class frequency^{tau} (logit adjustment)",
)
def logit_adjusted(ctx: LossContext) -> LossFn:
    """Menon et al. 2021: CE on logit + τ·log π_c."""
    return softmax_family(ctx)


@register_loss("balanced_softmax", rebalancing=True, offset_tau=lambda mcfg: 1.0, prior_note="÷ class frequency (balanced softmax)")
def balanced_softmax(ctx: LossContext) -> LossFn:
    """Ren et al. 2020: CE on logit + log n_c."""
    return softmax_family(ctx)


@register_loss("ldam", rebalancing=True, exact_prior=False, cosine_head=True)
def ldam(ctx: LossContext) -> LossFn:
    """Cao et al. 2019: CE on s·cos − s·m_y, margins m_c ∝ n_c^(−1/4), on the cosine head."""
    return softmax_family(ctx, margins=True)


def check_recipe_for_task(mcfg: ModelConfig, task: str, config_file: object = None) -> None:
    """Refuse, before any work, a recipe the competition's task cannot use (one line naming the key);
    the rules are `kit.config.recipe_task_conflict`."""
    problem = recipe_task_conflict(mcfg, task)
    if problem:
        where = f" ({config_file} is {task})" if config_file else ""
        raise KitError(f"{model_file(mcfg)}: {problem}{where}")


def recipe_prior(y_train: np.ndarray, sample_weights: np.ndarray, mcfg: ModelConfig, task: str, epoch: int) -> np.ndarray:
    """The class distribution the logits are calibrated to at `epoch` (what `train_prior` records).

    Multi-class, with q the sampler's class distribution, w the class weights in effect and π the
    class frequencies: the minimiser of weighted CE on logit + τ·log π has softmax ∝ p(x|c)·q_c·w_c/π_c^τ,
    so the prior is ∝ q·w/π^τ (τ = 1 for balanced softmax, 0 for CE and focal). Exact for CE, weighted CE,
    logit-adjusted and balanced softmax; nominal for focal and LDAM (their margins and focusing are
    not in it): the decision layer's fitted correction strength takes up the rest.
    """
    q = sampler_prior(y_train, sample_weights, task)
    if loss_of(mcfg).label_weights:
        return loss_prior(q, mcfg, bce_pos_weight(y_train, mcfg.pos_weight_clip))
    if task == "multi-label":
        return q
    counts = class_counts(y_train)
    log_prior = np.log(q)
    weights = class_weights_at(counts, mcfg, epoch)
    if weights is not None:
        log_prior = log_prior + np.log(weights)
    offset = logit_offset(smoothed_class_prior(y_train, task), mcfg)
    if offset is not None:
        log_prior = log_prior - offset
    prior = np.exp(log_prior - log_prior.max())
    return prior / prior.sum()


def prior_basis(mcfg: ModelConfig) -> str:
    """One line for the OOF json: what `train_prior` is and whether it is exact or nominal."""
    if mcfg.crt_epochs > 0:
        return f"cRT head: its sampler's class distribution (power {mcfg.crt_sampler_power}); exact for its CE"
    if mcfg.tau_norm > 0:
        return f"τ-normalised head (τ = {mcfg.tau_norm}): uniform, nominal"
    parts = [f"sampler power {mcfg.sampler_power}"]
    if mcfg.class_weights != "none":
        parts.append(f"× effective-number class weights (β = {mcfg.class_weight_beta}) from epoch {mcfg.class_weights_from_epoch + 1}")
    loss = loss_of(mcfg)
    if loss.prior_note:
        parts.append(loss.prior_note.replace("{tau}", str(mcfg.logit_adjust_tau)))
    nominal = not loss.exact_prior
    return " ".join(parts) + ("; nominal (the loss's focusing or margins are not in it)" if nominal else "; exact")
