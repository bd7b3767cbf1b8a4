"""Training a classifier: state, steps, optimiser, checkpoints, sharding, metric writing and the loop."""
