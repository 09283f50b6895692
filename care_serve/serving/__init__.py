"""The serving core: the data plane, the model manager, batching and worker threads."""
