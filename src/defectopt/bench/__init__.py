"""Benchmarking: runners per artifact format, task metrics, timing, memory, host fingerprint."""
