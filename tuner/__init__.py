"""sglang-tuner: search the launch flags of an LLM serving engine with Optuna.

Data flows one way (see docs/DESIGN.md):
search space -> sampled config -> server launch -> load generation (+ GPU telemetry)
-> metrics -> objective and constraints -> storage and reports.
"""

__version__ = "0.1.0"
