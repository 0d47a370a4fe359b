"""The training and evaluation engine, one concept per module (listed in docs/architecture.md);
importing this package imports nothing heavy."""
