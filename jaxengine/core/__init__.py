"""The engine-core process: the step loop around the scheduler and the model runner
(engine_core), its wire messages, the client the API process talks to it with, and the
data-parallel replicas and multi-host followers built above EngineCore."""
