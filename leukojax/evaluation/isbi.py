"""The ISBI 2019 challenge submission file (`isbi_valid.predict`) from final-test predictions.

One line per final-test image, `1` for ALL and `0` for HEM, in the numeric order of the image
names `1.bmp, 2.bmp, ..., 2586.bmp`, uploaded zipped. This is how public challenge entries wrote it
(e.g. Prellberg & Kramer's `submission.py` in github.com/jprellberg/isbi2019cancer reads
`{i+1}.bmp` in turn and zips the 0/1 lines as `isbi_valid.predict`); the challenge's own
instructions are no longer online, so treat the layout as reconstructed from those entries
(docs/evaluation.md).
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Sequence

import numpy as np

from leukojax.evaluation import prediction as prediction_lib

ISBI_FILE = "isbi_valid.predict"


def isbi_order(file_names: Sequence[str]) -> np.ndarray:
  """Positions of `file_names` in the challenge's order, checking they are exactly 1..N.<ext>."""
  stems = []
  for name in file_names:
    base = os.path.basename(name)
    match = re.fullmatch(r"(\d+)\.[A-Za-z]+", base)
    if not match:
      raise prediction_lib.PredictionError(f"{name}: ISBI final-test images are named <number>.bmp (1.bmp ... N.bmp); "
                       "predict the C-NMC final test folder or --split final_test.")
    stems.append(int(match.group(1)))
  missing = sorted(set(range(1, len(stems) + 1)) - set(stems))
  if missing or len(set(stems)) != len(stems):
    dup = sorted(s for s in set(stems) if stems.count(s) > 1)
    raise prediction_lib.PredictionError(f"The ISBI file needs every image 1..{len(stems)} exactly once; missing {missing[:10]}, "
                     f"repeated {dup[:10]} (was an image skipped as unreadable?).")
  return np.argsort(stems, kind="stable")


def write_isbi(prediction: prediction_lib.Prediction, path: str) -> tuple[str, str]:
  """Writes `isbi_valid.predict` (one 0/1 per line, 1 = ALL) and the zip to upload; returns both paths."""
  if prediction.class_names != prediction_lib.CNMC_CLASSES:
    raise prediction_lib.PredictionError(f"The ISBI file is for the C-NMC task {prediction_lib.CNMC_CLASSES}; this run predicts "
                     f"{prediction.class_names}.")
  if prediction.skipped:
    raise prediction_lib.PredictionError("The ISBI file needs a prediction for every final-test image; unreadable: "
                     + ", ".join(p for p, _ in prediction.skipped))
  order = isbi_order(prediction.file_names)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    f.writelines(f"{int(prediction.labels[i])}\n" for i in order)
  zip_path = os.path.splitext(path)[0] + ".zip"
  with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
    z.write(path, ISBI_FILE)
  return path, zip_path
