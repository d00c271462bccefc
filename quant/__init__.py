"""Quantization: the math in one place (primitives), formats, and the pipeline that packs a checkpoint."""
