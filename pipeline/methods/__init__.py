"""Layer 6, methods: what a method is for the training loop, every loss, the forget filter, the registry."""
