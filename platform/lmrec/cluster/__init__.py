"""Cluster helpers: local Ray heads and MLflow servers (tests, benchmarks), job submission."""
