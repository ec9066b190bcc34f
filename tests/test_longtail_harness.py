"""benchmarks/longtail v2: the paired comparison, the feature probe and the markdown, on hand-made results (no training)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from benchmarks.longtail.__main__ import best_pipeline_vs_best_recipe, goals, markdown, model_accepts, paired, recipe_names
from benchmarks.longtail.recipes import recipes


def test_paired_se_is_the_se_of_the_per_fold_differences():
    a, b = [-3.0, -3.2, -2.9, -3.1, -3.0], [-3.1, -3.3, -3.1, -3.1, -3.2]
    out = paired(a, b)
    diff = np.subtract(a, b)
    assert out["diff"] == pytest.approx(diff.mean())
    assert out["paired_se"] == pytest.approx(diff.std(ddof=1) / np.sqrt(5))
    assert out["paired_se"] < np.std(a, ddof=1) / np.sqrt(5)  # correlated folds: the pairing removes the fold effect


def results(pipe_folds: list[float], solution: float) -> dict:
    recipe = {"nested_cv": float(np.mean([-3.2, -3.3, -3.1, -3.2, -3.2])), "se": 0.03, "per_fold": [-3.2, -3.3, -3.1, -3.2, -3.2],
              "argmax": -3.3, "balanced_accuracy": 0.3, "macro_auc": 0.8, "decision": "bayes", "minutes": 2.5, "solution": -3.05}
    out = {
        "trivial": -4.7, "trivial_solution": -4.7, "recipes": {"sqrt_sampler": recipe},
        "pipelines": {"seeds3": {"nested_cv": float(np.mean(pipe_folds)), "se": 0.03, "per_fold": pipe_folds, "solution": solution,
                                 "decision": "argmax", "of": "sqrt_sampler", "seeds": [0, 1, 2], "minutes": 5.0}},
        "skipped": {"stack": "this kit's `kit blend` has no 'stack' weighting"},
        "conditions": {"n_train": 5000, "n_test": 1700, "difficulty": "realistic", "image_size": 64, "min_per_class": 10, "backbone": "test_resnet",
                       "epochs": 5, "cpu_count": 2, "total_minutes": 40.0},
    }
    out["best_pipeline_vs_best_recipe"] = best_pipeline_vs_best_recipe(out)
    out["goals"] = goals(out)
    return out


def test_the_goal_needs_two_paired_se_and_a_better_solution_score():
    clear = results([-3.0, -3.1, -2.9, -3.0, -3.05], solution=-2.9)  # +0.19 every fold, near-constant
    assert clear["best_pipeline_vs_best_recipe"]["pipeline"] == "seeds3"
    assert clear["goals"]["best_pipeline_beats_best_recipe_by_2_paired_se"]
    worse_on_solution = results([-3.0, -3.1, -2.9, -3.0, -3.05], solution=-3.1)
    assert not worse_on_solution["goals"]["best_pipeline_beats_best_recipe_by_2_paired_se"]
    noisy = results([-2.8, -3.5, -2.9, -3.3, -3.2], solution=-2.9)
    assert not noisy["goals"]["best_pipeline_beats_best_recipe_by_2_paired_se"]


def test_markdown_is_made_from_the_json():
    md = markdown(results([-3.0, -3.1, -2.9, -3.0, -3.05], solution=-2.9))
    assert "| `sqrt_sampler` | bayes | −3.200 ± 0.030 |" in md
    assert "seeds3 (sqrt_sampler, seeds [0, 1, 2], mean logits)" in md and "**−3.010 ± 0.030**" in md
    assert "stack: skipped" in md
    assert "paired SE" in md and "goal (≥ 2 paired SE and better on solution.csv): met" in md


def test_recipe_subsets_and_the_feature_probe():
    all_recipes = recipes(5)
    assert recipe_names(argparse.Namespace(recipes="core"), all_recipes) == ["ce", "sqrt_sampler", "logit_adjusted", "crt"]
    assert recipe_names(argparse.Namespace(recipes=None), all_recipes) == list(all_recipes)
    with pytest.raises(SystemExit, match="unknown recipes"):
        recipe_names(argparse.Namespace(recipes="ce,nope"), all_recipes)
    assert model_accepts({"seeds": [0, 1, 2]}) is None
    assert "no_such_key" in model_accepts({"no_such_key": 1})


def test_readme_and_training_doc_show_the_committed_benchmark_table():
    """One set of figures: the table in README.md and docs/training.md is the one generated from the committed JSON."""
    import json
    from pathlib import Path

    from benchmarks.longtail.__main__ import RESULTS, TABLE_DOCS, table_block

    expected = markdown(json.loads((RESULTS / "longtail.json").read_text()))
    for doc in TABLE_DOCS:
        assert table_block(Path(doc).read_text()) == expected, f"{doc}: run `python -m benchmarks.longtail --render benchmarks/results/longtail.json`"
