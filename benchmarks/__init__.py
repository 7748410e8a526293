"""Benchmarks: ground-truth table measurement, replay benchmark, end-to-end runs."""
