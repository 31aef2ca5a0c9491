"""Test support shared by tests and benchmarks (real servers, storages, the study CLI, Docker images);
imported by nothing in the product."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
