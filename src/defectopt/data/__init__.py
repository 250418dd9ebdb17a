"""Datasets: spec strings, one loader per original layout, synthetic generator, frozen split."""
