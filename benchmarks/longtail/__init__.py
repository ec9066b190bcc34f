"""Long-tail recipe benchmark: `python -m benchmarks.longtail` (or `make bench-longtail`).

Trains each long-tail recipe as one variant of the same demo backbone on a synthetic competition, 5 folds,
through the kit's own CLI in a scratch directory, then reads the files the stages wrote and prints one
table: per recipe the nested-CV competition score under the kit's decision and under plain argmax,
balanced accuracy, macro AUC, minutes of training and the score on the synthetic `solution.csv`; the
trivial baseline; and the blend of all recipes. The same figures go to
`benchmarks/results/longtail.json` (`longtail_quick.json` for `--quick`).
"""
