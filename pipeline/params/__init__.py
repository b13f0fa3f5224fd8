"""Layer 2, params: an experiment's params merged over the defaults, validated in one place; run names;
the keys each stage reads."""
