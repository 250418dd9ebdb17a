"""Compression: structured pruning, quantization, and export to deployment runtimes."""
