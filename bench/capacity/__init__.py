"""Capacity: many pinned instances on one host, server mode's load generator and its verdict."""
