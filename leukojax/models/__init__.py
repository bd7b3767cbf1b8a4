"""Flax NNX backbones (ports of keras.applications), Keras weight import and classifiers."""

from leukojax.models.backbones import (
  BACKBONES,
  DEFAULT_INPUT_SIZE,
  MIN_INPUT_SIZE,
  PREPROCESSING_MODE,
  create_backbone,
)
from leukojax.models.keras_weights import KerasWeightsError, load_keras_weights
from leukojax.models.layers import Backbone
from leukojax.models.pretrained import (
  WeightsNotFoundError,
  find_weights_file,
  load_converted,
  load_pretrained,
)
