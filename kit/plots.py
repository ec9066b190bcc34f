"""PNG pictures of what a stage did (matplotlib, Agg backend: no display needed).

Every function writes one PNG atomically and returns its path, which the stage prints.
Each function is self-contained: data in, one PNG out.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kit.files import atomic_write  # noqa: E402


def save_figure(fig, path: str | Path) -> Path:
    """Write `fig` as PNG to `path` atomically and close it."""
    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path


# blend and submission pictures


def confusion_png(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], path: str | Path, title: str = "") -> Path:
    """Row-normalized confusion matrix (rows: true class, columns: predicted) with class names.

    Multi-label indicators are drawn as per-class (true, predicted) rates: row c = images with label c,
    column k = fraction of them predicted k.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    counts = y_true.T @ y_pred  # (C, C): one-hot → the usual confusion matrix
    n_true = y_true.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.where(n_true[:, None] > 0, counts / np.maximum(n_true[:, None], 1), np.nan)
    c = len(classes)
    size = max(5.0, 0.42 * c + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(c), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(c), [f"{name} ({int(n)})" for name, n in zip(classes, n_true)], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (N)")
    for i in range(c):
        for j in range(c):
            if not np.isnan(rates[i, j]) and rates[i, j] >= 0.005:
                ax.text(j, i, f"{rates[i, j]:.2f}", ha="center", va="center", fontsize=5,
                        color="white" if rates[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title or "confusion matrix (row-normalized)", fontsize=9)
    return save_figure(fig, path)


def per_class_png(scores: np.ndarray, baseline: np.ndarray, classes: list[str], path: str | Path, title: str = "") -> Path:
    """Per-class competition score bars beside the trivial baseline's; the means are in the legend."""
    scores = np.asarray(scores, dtype=np.float64)
    baseline = np.asarray(baseline, dtype=np.float64)
    c = len(classes)
    x = np.arange(c)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * c + 2), 4.5))
    ax.bar(x - 0.2, np.nan_to_num(scores), width=0.4, label=f"model (mean {np.nanmean(scores):+.3f})")
    ax.bar(x + 0.2, np.nan_to_num(baseline), width=0.4, color="grey", label=f"trivial baseline (mean {np.nanmean(baseline):+.3f})")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(x, classes, rotation=90, fontsize=7)
    ax.set_ylabel("score per class")
    ax.legend(fontsize=8)
    ax.set_title(title or "score per class", fontsize=9)
    return save_figure(fig, path)


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(mean confidence, accuracy, count) per equal-width bin, and the expected calibration error."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0, 1, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(which, confidence, minlength=n_bins) / count
        acc = np.bincount(which, correct, minlength=n_bins) / count
    ece = float(np.nansum(count / max(count.sum(), 1) * np.abs(acc - conf)))
    return conf, acc, count, ece


def _reliability_points(probs: np.ndarray, labels: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Multi-class: top-label confidence vs whether it is right; multi-label: every (image, class) probability pooled."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if task == "multi-label":
        return probs.ravel(), labels.ravel().astype(np.float64)
    top = probs.argmax(axis=1)
    return probs[np.arange(len(top)), top], (labels.argmax(axis=1) == top).astype(np.float64)


def reliability_png(
    probs_before: np.ndarray,
    probs_after: np.ndarray,
    labels: np.ndarray,
    task: str,
    path: str | Path,
    *,
    n_bins: int = 15,
    title: str = "",
) -> Path:
    """Reliability diagram before and after temperature scaling, with the ECE of each in the legend."""
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.plot([0, 1], [0, 1], color="black", linewidth=0.8, linestyle="--", label="perfectly calibrated")
    for probs, name, marker in ((probs_before, "before", "o"), (probs_after, "after", "s")):
        conf, acc, count, ece = reliability_bins(*_reliability_points(probs, labels, task), n_bins=n_bins)
        keep = count > 0
        ax.plot(conf[keep], acc[keep], marker=marker, label=f"{name} (ECE {ece:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("top-label confidence" if task != "multi-label" else "predicted probability (all classes pooled)")
    ax.set_ylabel("accuracy" if task != "multi-label" else "fraction positive")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title or "reliability", fontsize=9)
    return save_figure(fig, path)


# training curves


def training_curves_png(history, path: str | Path, title: str = "") -> Path:
    """Per-epoch train/val loss, competition score (with the trivial baseline), macro-F1 and AUC.

    `history` is a DataFrame (or list of dicts) with columns epoch, train_loss, val_loss, val_score,
    trivial_baseline, val_macro_f1, val_auc; the best epoch (column `best`) is marked.
    """
    import pandas as pd

    h = pd.DataFrame(history)
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    epochs = h["epoch"].to_numpy()
    axes[0].plot(epochs, h["train_loss"], marker="o", label="train")
    axes[0].plot(epochs, h["val_loss"], marker="s", label="val")
    axes[0].set_title("loss")
    axes[1].plot(epochs, h["val_score"], marker="o", label="val score (decision rule)")
    axes[1].plot(epochs, h["trivial_baseline"], linestyle="--", color="gray", label="trivial baseline")
    axes[1].set_title("competition score")
    axes[2].plot(epochs, h["val_macro_f1"], marker="o", label="val")
    axes[2].set_title("macro-F1")
    axes[3].plot(epochs, h["val_auc"], marker="o", label="val")
    axes[3].set_title("macro AUC")
    if "best" in h and h["best"].any():
        best_epoch = epochs[np.flatnonzero(h["best"].to_numpy())[-1]]
        for ax in axes:
            ax.axvline(best_epoch, color="green", linewidth=0.8, linestyle=":")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.suptitle(title or "training curves", fontsize=10)
    return save_figure(fig, path)
