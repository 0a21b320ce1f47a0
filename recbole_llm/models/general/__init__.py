"""General (non-sequential) recommenders."""
