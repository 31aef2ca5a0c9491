"""One trial: start a server, measure it, record the outcome on the Optuna trial (runner, pruning, progress)."""
