"""Host-side scheduling: requests, batches, the page allocator. Imports no JAX."""
