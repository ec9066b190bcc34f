"""Inference on new images with a finished ensemble (`kit predict`)."""
