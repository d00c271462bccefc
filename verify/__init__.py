"""Artifact -> model -> loss and bits per byte; adaptive rerun; the routing experiment; reports."""
