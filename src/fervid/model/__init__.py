"""CNNs built from scratch in Keras 3 (keras layers only, so any Keras backend trains them)."""
