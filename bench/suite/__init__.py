"""Stage 1, the suite: YAML in, validated against its schema, expanded into Scenarios."""
