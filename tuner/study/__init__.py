"""Study sessions: options, opening or resuming a study, seeds, confirmation; ``python -m tuner.study`` is the CLI."""
