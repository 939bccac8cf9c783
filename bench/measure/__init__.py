"""Stage 4, measuring: the parent runner, the worker process it starts (fresh or forked from the zygote),
and what is sampled around it (memory, contention, the timeline)."""
