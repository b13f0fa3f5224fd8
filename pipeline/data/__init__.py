"""Layer 5, data: where images come from, the training set, the sets later stages read, forget-set
strategies and deletion requests."""
