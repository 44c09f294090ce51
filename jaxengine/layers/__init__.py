"""Building blocks every model file is written with: pure single-device functions over arrays
and parameter pytrees (GSPMD shards them; see jaxengine/parallel/sharding.py). They import
nothing from the runtime, the scheduler or the engine core."""
