"""Attention kernels, each beside its pure-jnp reference. Imports only JAX."""
