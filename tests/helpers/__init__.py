"""Helpers shared by the tests: paths, numerics, packages, stacks, clients and the browser."""
