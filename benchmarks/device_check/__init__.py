"""`python -m benchmarks.device_check`: validate and measure jaxengine on whatever platform JAX
finds (a GPU or TPU when there is one), in one command. See __main__.py and README.md here."""
