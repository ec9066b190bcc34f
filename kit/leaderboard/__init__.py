"""Kaggle leaderboard: the authenticated API (client), the ledger of what was sent (ledger), CV beside LB (plot)."""
