"""Test support shared by tests and benchmarks (real servers, storages, fixtures); imported by nothing in the product."""
