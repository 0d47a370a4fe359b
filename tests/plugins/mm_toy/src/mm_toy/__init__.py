"""A tiny regression plugin for mm's tests: a linear model, a JSON dataset and its builder."""
