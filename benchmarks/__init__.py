"""Benchmarks for jaxengine (run them as modules: `python -m benchmarks.<name>`)."""
