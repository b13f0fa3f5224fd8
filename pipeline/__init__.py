"""Data unlearning in diffusion models: the stages of the workflow (see README.md)."""
