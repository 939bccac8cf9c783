"""The history store of every run (SQLite or PostgreSQL)."""
