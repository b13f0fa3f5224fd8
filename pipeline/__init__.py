"""Data unlearning in diffusion models: the stages of the workflow and the libraries under them.

Sub-packages by layer, lowest first; a module imports only from its own package and the layers
below it (tests/test_architecture.py): errors, artifacts, params, diffusion, search, data, methods,
training, evaluation, report, stages, and workflow (which writes dvc.yaml).
"""
