"""Layer 10, stages: one thin command line per workflow rule (``python -m pipeline.stages.<name>``);
nothing imports a stage."""
