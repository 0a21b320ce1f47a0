"""Benchmark suites: run many models on one protocol, store one JSON per run, render tables."""
