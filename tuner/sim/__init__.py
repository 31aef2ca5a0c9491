"""A simulated SGLang server: SGLang's command line and HTTP API over a modelled GPU.

Run it as ``python -m tuner.sim --model-path Qwen/Qwen3-32B-AWQ --port 30000 [SGLang flags]
[--sim-gpu rtx5090 --sim-sglang-version 0.5.23 --sim-startup-scale 0.02 ...]``.
It is a simulator: timings come from ``perfmodel.py`` (memory bandwidth, FLOPs, launch
overheads of the chosen GPU and model profiles), failures from ``failures.py``. See
``docs/simulator.md`` for what it models and how it was calibrated.

Modules: ``cli`` (flags), ``config`` (defaults resolved), ``profiles`` (GPU and model data),
``perfmodel`` (formulas), ``policies`` (schedule policies), ``engine`` (continuous batching),
``failures`` (crash plan), ``server`` (HTTP API), ``metrics`` (Prometheus), ``startup`` (main).
"""
