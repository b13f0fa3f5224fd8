"""Layer 4, search: the spaces images are compared in, and exact and approximate nearest neighbours (faiss)."""
