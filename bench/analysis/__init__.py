"""Reading runs against each other: compare (the CI gate), change points, trade-offs, the planner, export."""
