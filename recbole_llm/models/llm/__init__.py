"""LLM-based rankers."""
