"""What a row checks beside its latency: fidelity, inference hygiene, generation, the input pipeline,
and how much the host itself took while it was timed (contention)."""
