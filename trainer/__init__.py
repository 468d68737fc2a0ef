"""The training loop and everything it calls."""
