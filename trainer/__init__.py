"""One run, from flags to results.json: the training loop and everything it calls."""
