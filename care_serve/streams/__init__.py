"""Camera streams: sources decoded with PyAV, frames through a pipeline or model, events out."""
