"""Shared ground: a run's resolved settings and the error types every package raises."""
