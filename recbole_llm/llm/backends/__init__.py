"""LLM backends: `hf` (local transformers), `openai` (any compatible server), `vllm`, `langchain`."""
