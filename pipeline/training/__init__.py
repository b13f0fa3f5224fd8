"""Layer 7, training: the one training loop, resuming, the pretraining recipe, what a job cost."""
