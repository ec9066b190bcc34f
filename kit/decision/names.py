"""One vocabulary: the display name of every decision rule and blend weighting, used by calibrate, blend,
score, the report and the Optuna studies, so one rule reads the same everywhere; and the plain-language
notes every stage prints (a line, not only a table cell) when a result is degenerate.

Keys are the registry names (kit.decision.candidates, kit.ensemble.weights); a blend pair is
"<weighting> + <rule>" or a (weighting, rule) tuple.
"""

from __future__ import annotations

import numpy as np

DISPLAY_NAMES: dict[str, str] = {
    # decision rules, simplest first (kit.decision.candidates)
    "trivial": "trivial baseline",
    "argmax": "argmax of the logits",
    "prior_argmax": "argmax, prior-corrected (α = 1)",
    "bayes": "Bayes rule, T fitted (α = 1)",
    "bayes_alpha": "Bayes rule, T and α fitted",
    "offsets": "per-class offsets (searched)",
    "threshold_0.5": "threshold 0.5",
    "closed_form": "metric's threshold, T fitted (α = 1)",
    "closed_form_alpha": "metric's threshold, T and α fitted",
    "thresholds": "per-class thresholds (fitted)",
    "rounder": "cut points on the expected grade (optimised rounder)",
    # probability metrics (log-loss): calibrated probabilities
    "raw": "raw softmax / sigmoid",
    "temperature": "temperature fitted (no prior correction)",
    "prior": "T fitted, prior-corrected (α = 1)",
    "temperature_alpha": "T and α fitted",
    "bias": "T, α and per-class bias fitted",
    # ranking metrics (AUC, mAP): the scores
    "scores": "the scores (softmax / sigmoid)",
    "calibrated": "the scores, T and α fitted",
    # blend weightings (kit.ensemble.weights)
    "single_best": "best single member",
    "equal": "equal weights",
    "greedy": "greedy selection",
    "rank_average": "rank average",
    "stack": "stacked (learned weights)",
}

MEMBERS_CALIBRATED = "members' T and α fitted inside the blend"


def display_name(key: str | tuple[str, str]) -> str:
    """The one display name of a rule, a weighting or a blend pair ("greedy + bayes"); an unknown key as it is."""
    if isinstance(key, tuple):
        return " + ".join(display_name(part) for part in key)
    if " + " in key:
        return " + ".join(display_name(part) for part in key.split(" + "))
    return DISPLAY_NAMES.get(key, key)


def degenerate_notes(chosen: str | None, prediction: np.ndarray | None, task: str, classes: list[str] | None = None) -> list[str]:
    """Lines to print when the chosen rule is the trivial baseline, a prediction names a single class for
    every row, or a multi-label prediction has no positive at all."""
    notes = []
    if chosen is not None and chosen.split(" + ")[-1] == "trivial":
        notes.append("note: the chosen rule is the trivial baseline: no fitted rule beat predicting "
                     + ("all negative" if task == "multi-label" else "the majority class") + " in nested CV; the model adds nothing yet")
    if prediction is not None and len(prediction):
        pred = np.asarray(prediction)
        if task == "multi-label":
            if not pred.any():
                notes.append("note: this multi-label prediction has no positive label in any row")
        else:
            used = np.flatnonzero(pred.sum(axis=0))
            if len(used) == 1:
                name = classes[int(used[0])] if classes is not None else f"class {int(used[0])}"
                notes.append(f"note: every row is predicted as the single class '{name}'")
    return notes
