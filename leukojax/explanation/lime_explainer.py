"""LIME (Ribeiro et al., 2016) through the `lime` package, as Kim et al. used it.

The image is cut into superpixels (SLIC or quickshift from scikit-image, fixed seed); LIME switches
random subsets of them to grey (Kim: "covering them in gray"), asks the model for the class
probabilities of each perturbed image, and fits a weighted linear model whose coefficients are the
superpixels' weights. The model is called through one jitted function on a fixed batch size (the
last, partial batch is padded), so however many samples LIME draws, XLA compiles once.

LIME sees the resized uint8 image (what the model sees before normalisation); `classifier_fn`
normalises each perturbed image with the run's own `Normalize` transform, exactly as
`leukojax.data.preprocess_images` does after its resize.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import numpy as np
from flax import nnx
from lime import lime_image
from skimage.segmentation import quickshift, slic

from leukojax.models import outputs

SEGMENTATIONS: tuple[str, ...] = ("slic", "quickshift")
GREY = 128  # uint8 mid-grey: the colour LIME paints a switched-off superpixel


def segment(image: np.ndarray, method: str = "slic", n_segments: int = 50, seed: int = 0) -> np.ndarray:
  """Superpixel labels `0..n-1` (int) of a uint8 image; deterministic for a given seed.

  SLIC (default) gives about `n_segments` compact regions at any image size; quickshift is LIME's
  own default (kernel 4, max_dist 200, ratio 0.2) and gives few, large regions on 32-75 px images.
  """
  if method == "slic":
    labels = slic(image, n_segments=n_segments, compactness=10.0, start_label=0, channel_axis=-1)
  elif method == "quickshift":
    labels = quickshift(image, kernel_size=4, max_dist=200, ratio=0.2, rng=seed)
  else:
    raise ValueError(f"Unknown segmentation {method!r}; expected one of {SEGMENTATIONS}.")
  # LIME indexes superpixels 0..n-1; relabel in case the algorithm skipped a label.
  return np.unique(labels, return_inverse=True)[1].reshape(labels.shape).astype(np.int64)


class BatchedClassifier:
  """uint8 images -> class probabilities, through one jitted call on a fixed batch size."""

  def __init__(self, model: nnx.Module, normalize: Callable[[np.ndarray], np.ndarray], batch_size: int = 50):
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    graphdef, self._state = nnx.split(model)
    self.batch_size = batch_size
    self._normalize = normalize
    self._fn = jax.jit(lambda state, x: outputs.class_probabilities(outputs.probabilities(nnx.merge(graphdef, state)(x))))

  def __call__(self, images: np.ndarray) -> np.ndarray:
    x = np.stack([self._normalize(image) for image in np.asarray(images)]).astype(np.float32)
    out = []
    for start in range(0, len(x), self.batch_size):
      chunk = x[start:start + self.batch_size]
      n = len(chunk)
      if n < self.batch_size:
        chunk = np.concatenate([chunk, np.zeros((self.batch_size - n, *chunk.shape[1:]), chunk.dtype)])
      out.append(np.asarray(self._fn(self._state, chunk))[:n])
    return np.concatenate(out).astype(np.float64)

  @property
  def compilations(self) -> int:
    """How many times the model function was compiled (1 per image size, however many calls)."""
    return self._fn._cache_size()  # pylint: disable=protected-access


@dataclasses.dataclass
class LimeResult:
  segments: np.ndarray  # [H, W] superpixel labels 0..n-1
  weights: dict[int, float]  # superpixel -> weight of the linear model for the target class
  target: int
  score: float  # R^2 of the local linear model on the weighted samples
  num_samples: int

  def positive_order(self) -> list[int]:
    """Superpixels with a positive weight, most positive first."""
    return [s for s, w in sorted(self.weights.items(), key=lambda sw: -sw[1]) if w > 0]


class LimeExplainer:
  """Explains one uint8 image at a time with `lime_image.LimeImageExplainer` (fixed seeds)."""

  def __init__(self, classifier: BatchedClassifier, *, num_samples: int = 1000, segmentation: str = "slic",
               n_segments: int = 50, hide_color: int = GREY, seed: int = 0):
    if num_samples < 2:
      raise ValueError(f"LIME needs at least 2 samples, got {num_samples}.")
    if segmentation not in SEGMENTATIONS:
      raise ValueError(f"Unknown segmentation {segmentation!r}; expected one of {SEGMENTATIONS}.")
    self.classifier = classifier
    self.num_samples, self.segmentation, self.n_segments = num_samples, segmentation, n_segments
    self.hide_color, self.seed = hide_color, seed

  def __call__(self, image: np.ndarray, target: int) -> LimeResult:
    """`image`: uint8 `[H, W, 3]`, as the model sees it before normalisation; `target`: a class index."""
    segments = segment(image, self.segmentation, self.n_segments, self.seed)
    # A fresh explainer per image: the same image gives the same samples wherever it is in the list.
    explainer = lime_image.LimeImageExplainer(random_state=self.seed)
    explanation = explainer.explain_instance(
        image, self.classifier, labels=(target,), top_labels=None, hide_color=self.hide_color,
        num_features=int(segments.max()) + 1, num_samples=self.num_samples,
        batch_size=self.classifier.batch_size, segmentation_fn=lambda _: segments,
        random_seed=self.seed)
    weights = {int(s): float(w) for s, w in explanation.local_exp[target]}
    return LimeResult(segments=segments, weights=weights, target=target, score=float(explanation.score),
                      num_samples=self.num_samples)
