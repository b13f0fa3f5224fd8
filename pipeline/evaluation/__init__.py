"""Layer 8, evaluation: every figure of a model (memorization, likelihood, probes, copy detection,
quality, membership), trajectories, diagnostics, relearning attacks."""
