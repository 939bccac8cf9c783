"""The `bench` commands: one module per verb, each with `register(commands, common, summary)` (its
parser and handler). bench.cli imports one when its command runs; a new verb is a new module here
and one line in cli.COMMANDS."""
