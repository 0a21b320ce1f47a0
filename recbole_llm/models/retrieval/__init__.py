"""Text-embedding retrievers: items and users embedded by a sentence encoder, searched with FAISS."""
