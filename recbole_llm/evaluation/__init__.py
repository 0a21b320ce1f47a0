"""Scoring under a protocol and tie-safe metrics, on top of RecBole's trainer and evaluator."""
