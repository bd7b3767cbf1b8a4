"""Data for LeukoJAX: TFDS sources, split protocols, train-only statistics, balancing, grain pipelines."""

from leukojax.data.config import default_data_config
from leukojax.data.describe import describe_splits
from leukojax.data.errors import DataError
from leukojax.data.pipeline import EvalSplit, Pipeline, build_pipeline
from leukojax.data.stats import DataStats, load_stats
from leukojax.data.transforms import preprocess_images
