"""Keras-layer models written PyTorch-style, looked up by name in the registry."""
