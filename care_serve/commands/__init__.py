"""Subcommands of the care-serve command line; each module exposes ``register``."""
