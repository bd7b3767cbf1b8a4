"""Flax NNX backbones (ports of keras.applications), Keras weight import and classifiers."""
