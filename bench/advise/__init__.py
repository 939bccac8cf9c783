"""`bench advise`: for a suite's model, the cheapest configuration that meets a p99 SLO at a target rate
and a fidelity floor, measured in one run folder within a time budget.

`space` (the candidates: the suite's axes, and what the runtime registry says runs here for the
rest), `stages` (screen, capacity, confirm; the budget; resume), `decide` (the verdicts, the
dominance rule, the fidelity floor, the ranking and the plan: pure functions over typed
records), `output` (the console table, advice.json, advice.yaml). The advice's own records are
bench.results.advice's, which the report reads back.
"""
