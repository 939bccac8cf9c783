"""How figures and tables are written: byte units and milliseconds, the plain-text table, Markdown."""
