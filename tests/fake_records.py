"""In-memory stand-ins for the TFDS data sources: lists of record dicts with the builders' schema."""

from __future__ import annotations

import hashlib

import numpy as np


def _image(rng: np.random.Generator, size: int, label: int) -> np.ndarray:
  """A random image whose colour depends on the label, so classes differ in their statistics."""
  base = np.array([60, 120, 180], np.int32) if label else np.array([180, 90, 40], np.int32)
  noise = rng.integers(-40, 41, size=(size, size, 3))
  return np.clip(base + noise, 0, 255).astype(np.uint8)


def _record(image: np.ndarray, label: int, file_name: str, **extra) -> dict:
  sha = hashlib.sha256(image.tobytes()).hexdigest().encode()
  return {"image": image, "label": label, "file_name": file_name.encode(), "image_sha256": sha, **extra}


def cnmc_sources(
    subjects_per_class: tuple[int, int] = (6, 9),
    images_per_subject: int = 4,
    size: int = 32,
    seed: int = 0,
    prelim_subjects: tuple[int, int] = (2, 2),
) -> dict[str, list[dict]]:
  """C-NMC-like splits: subjects dealt round-robin over fold_0..2; HEM (0) has fewer subjects."""
  rng = np.random.default_rng(seed)
  folds: dict[str, list[dict]] = {f"fold_{k}": [] for k in range(3)}
  subject = 0
  for label, n_subjects in enumerate(subjects_per_class):
    for _ in range(n_subjects):
      sid = f"H{subject}" if label == 0 else str(subject)
      fold = subject % 3
      for i in range(images_per_subject):
        name = f"UID_{sid}_{i}_1_{'all' if label else 'hem'}.bmp"
        folds[f"fold_{fold}"].append(
            _record(_image(rng, size, label), label, name, subject_id=sid.encode(), fold=fold))
      subject += 1
  prelim = []
  for label, n_subjects in enumerate(prelim_subjects):
    for _ in range(n_subjects):
      sid = f"P{subject}"
      for i in range(images_per_subject):
        prelim.append(_record(_image(rng, size, label), label, f"{subject}_{i}.bmp", subject_id=sid.encode(), fold=-1))
      subject += 1
  final = [_record(_image(rng, size, 0), -1, f"f{i}.bmp", subject_id=b"F1", fold=-1) for i in range(3)]
  return {**folds, "prelim_test": prelim, "final_test": final}


def taleqani_sources(per_class: tuple[int, ...] = (10, 6, 6, 8), size: int = 24, seed: int = 0,
                     duplicates: int = 0) -> dict[str, list[dict]]:
  """Taleqani-like single `train` split (no subject ids); `duplicates` copies of the first images."""
  rng = np.random.default_rng(seed)
  names = ("Benign", "Early", "Pre", "Pro")
  records = []
  for label, n in enumerate(per_class):
    for i in range(n):
      records.append(_record(_image(rng, size, int(label == 3)), label, f"WBC-{names[label]}-{i:03d}.jpg"))
  for i in range(duplicates):
    records.append(dict(records[i], file_name=f"dup-{i}.jpg".encode()))
  return {"train": records}
