"""Per-operator profiles, run apart from the timed run, and the folder they write."""
