"""The `bench` commands: one module per verb, each with `register(commands, common)` (its parser and
handler). bench.cli assembles them; a new verb is a new module here and one line in cli.COMMANDS."""
