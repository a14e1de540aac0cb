"""What a person gives the harness: config files and arguments, their checks, W&B credentials."""
