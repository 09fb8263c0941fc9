"""Training: configuration, the Keras fit loop with resumable checkpoints, and the run report."""
