"""Shared test set-up: CPU-only JAX with a persistent compilation cache, Keras on its JAX backend."""

import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO / ".cache" / "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

from absl import flags  # noqa: E402

# grain worker processes and absl-based entry points read FLAGS; pytest never calls absl.app.run.
flags.FLAGS.mark_as_parsed()
