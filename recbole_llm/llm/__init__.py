"""Language models behind one narrow interface: backends, response cache, prompts, answer parsing."""
