"""Sequential recommenders trained with the loss family of `recbole_llm.losses`."""
