"""Stage 2, the models: a scenario's model by name, from the user's files or a Hugging Face folder, built."""
