"""Entry-point tasks: config -> objects -> engine."""
