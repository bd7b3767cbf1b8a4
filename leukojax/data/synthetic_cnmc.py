"""SYNTHETIC STAND-IN for the C-NMC 2019 download: exact layout and names, generated cells.

No real C-NMC images exist in this repository (see `/work/shared/data/README.md`). Tests and the
demo still need the real folder layouts, file names and prelim-test CSV, so this module writes
them with generated images: 450x450 24-bit BMPs, one coloured "cell" of about 300 px centred on
black. ALL cells have a large dark nucleus filling most of the cell; HEM cells a smaller, paler,
off-centre nucleus; every subject shifts colour and size a little, so a classifier can learn the
class and a subject-disjoint split is measurably harder than a random one. Nothing here is real
data: never report results on it as C-NMC results.

    python -m leukojax.data.synthetic_cnmc --out /tmp/cnmc_manual --layout kaggle [--zipped]
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import pathlib
import zipfile
from collections.abc import Iterator

import numpy as np
from PIL import Image

SIZE = 450
PRELIM_CSV = "C-NMC_test_prelim_phase_data_labels.csv"
LAYOUTS = ("kaggle", "tcia")

# Top folders per layout: (training root, prelim folder, prelim CSV, final folder).
_KAGGLE = ("C-NMC_Leukemia/training_data",
           "C-NMC_Leukemia/validation_data/C-NMC_test_prelim_phase_data",
           f"C-NMC_Leukemia/validation_data/{PRELIM_CSV}",
           "C-NMC_Leukemia/testing_data/C-NMC_test_final_phase_data")
_TCIA = ("C-NMC_training_data", "C-NMC_test_prelim_phase_data", PRELIM_CSV,
         "C-NMC_test_final_phase_data")

# Class appearance (RGB): nucleus colour, cytoplasm colour, nucleus/cell radius ratio, offset.
_STYLE = {
    "all": dict(nucleus=(95, 45, 135), cytoplasm=(150, 145, 205), ratio=0.80, offset=0.03),
    "hem": dict(nucleus=(125, 80, 155), cytoplasm=(205, 165, 195), ratio=0.58, offset=0.15),
}
_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)


def _subject_style(rng: np.random.Generator) -> dict:
  """Per-subject variation: a colour cast and a size factor shared by all of its cells."""
  return dict(shift=rng.normal(0.0, 12.0, size=3), scale=rng.uniform(0.9, 1.05))


def render_cell(cls: str, subject: dict, rng: np.random.Generator) -> np.ndarray:
  """Returns one synthetic cell, uint8 [450, 450, 3], black outside the cell."""
  style = _STYLE[cls]
  radius = 150.0 * subject["scale"] * rng.uniform(0.93, 1.03)
  cy, cx = SIZE / 2 + rng.uniform(-8, 8, size=2)
  angle = rng.uniform(0, np.pi)
  aspect = rng.uniform(0.85, 1.0)
  cos, sin = np.cos(angle), np.sin(angle)
  u = ((_XX - cx) * cos + (_YY - cy) * sin) / radius
  v = (-(_XX - cx) * sin + (_YY - cy) * cos) / (radius * aspect)
  cell = u**2 + v**2 <= 1.0
  off = style["offset"] * rng.uniform(0.5, 1.5)
  nr = style["ratio"] * rng.uniform(0.95, 1.05)
  nucleus = (u - off) ** 2 + (v + off / 2) ** 2 <= nr**2
  img = np.zeros((SIZE, SIZE, 3), np.float32)
  shift = subject["shift"]
  img[cell] = np.asarray(style["cytoplasm"], np.float32) + shift
  img[nucleus & cell] = np.asarray(style["nucleus"], np.float32) + shift
  # Chromatin texture: smooth low-resolution noise darkening the nucleus, pixel noise in the cell.
  blotch = Image.fromarray(rng.normal(0.0, 1.0, size=(12, 12)).astype(np.float32), "F")
  blotch = np.asarray(blotch.resize((SIZE, SIZE), Image.BICUBIC))
  img -= (18.0 * np.clip(blotch, 0, None) * (nucleus & cell))[..., None]
  img += rng.standard_normal(size=img.shape, dtype=np.float32) * 6.0 * cell[..., None]
  img[~cell] = 0.0
  return np.clip(img, 0, 255).astype(np.uint8)


def _bmp(array: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(array, "RGB").save(buf, format="BMP")  # 24-bit, like the real files
  return buf.getvalue()


def _cells(cls: str, sid: str, n: int, rng: np.random.Generator) -> Iterator[tuple[str, bytes]]:
  """Yields (challenge-style file name, BMP bytes) for one subject's cells."""
  subject = _subject_style(rng)
  for k in range(n):
    name = f"UID_{sid}_{k // 2 + 1}_{k % 2 + 1}_{cls}.bmp"  # subject, image, cell, class
    yield name, _bmp(render_cell(cls, subject, rng))


class _Sink:
  """Writes files either as plain files or into zip archives named after their top folder."""

  def __init__(self, root: pathlib.Path, zip_names: dict[str, str] | None):
    self.root, self.zip_names, self.zips, self.written = root, zip_names, {}, []

  def write(self, rel: str, data: bytes) -> None:
    top = rel.split("/", 1)[0]
    if self.zip_names is not None and top in self.zip_names:
      if top not in self.zips:
        path = self.root / self.zip_names[top]
        self.zips[top] = zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1)
        self.written.append(str(path))
      self.zips[top].writestr(rel, data)
      return
    path = self.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    self.written.append(str(path))

  def close(self) -> None:
    for z in self.zips.values():
      z.close()


def write_synthetic_cnmc(
    root: str | pathlib.Path,
    *,
    layout: str = "kaggle",
    zipped: bool = False,
    folds: int = 3,
    subjects_per_class: int = 2,
    cells_per_subject: int = 3,
    prelim_subjects_per_class: int = 2,
    prelim_cells_per_subject: int = 3,
    final_subjects: int = 4,
    final_cells_per_subject: int = 3,
    seed: int = 0,
) -> dict:
  """Writes a synthetic C-NMC manual download under `root`; returns what it wrote.

  Training fold k holds `subjects_per_class` ALL subjects (ids 1, 2, ...) and as many HEM subjects
  (H1, H2, ...), each subject in one fold only, `cells_per_subject` cells each. The prelim test
  adds new subjects, renamed `1.bmp ... N.bmp` in shuffled order with the CSV
  `Patient_ID,new_names,labels` (Patient_ID = the original name, label 1 = ALL). The final test is
  `1.bmp ... M.bmp`, unlabelled, from `final_subjects` subjects of both classes.
  `zipped=True` writes what the sites serve: Kaggle one `leukemia-classification.zip`; TCIA one
  zip per top folder, with the CSV beside them. Deterministic in `seed`.

  Returns a dict: `root`, `layout`, `zipped`, `files` (paths written), `splits` (per split:
  `num_examples`, `classes` and `subjects` counts, as the builder will report them) and
  `final_test_truth` (`{file_name: [class, subject]}`, the hidden labels of the final test).
  """
  if layout not in LAYOUTS:
    raise ValueError(f"layout={layout!r}; expected one of {LAYOUTS}")
  root = pathlib.Path(root)
  root.mkdir(parents=True, exist_ok=True)
  train_dir, prelim_dir, prelim_csv, final_dir = _KAGGLE if layout == "kaggle" else _TCIA
  zip_names = None
  if zipped:
    zip_names = ({"C-NMC_Leukemia": "leukemia-classification.zip"} if layout == "kaggle" else
                 {d: f"{d}.zip" for d in (train_dir, prelim_dir, final_dir)})
  sink = _Sink(root, zip_names)
  rng = np.random.default_rng(seed)
  splits = {}
  counters = {"all": 0, "hem": 0}

  def next_sid(cls: str) -> str:
    counters[cls] += 1
    return ("" if cls == "all" else "H") + str(counters[cls])

  def stats(rows: list[tuple[str, str]]) -> dict:
    return {"num_examples": len(rows),
            "classes": dict(sorted(collections.Counter(c for c, _ in rows).items())),
            "subjects": dict(sorted(collections.Counter(s for _, s in rows).items()))}

  for fold in range(folds):
    rows = []
    for cls in ("all", "hem"):
      for _ in range(subjects_per_class):
        sid = next_sid(cls)
        for name, data in _cells(cls, sid, cells_per_subject, rng):
          sink.write(f"{train_dir}/fold_{fold}/{cls}/{name}", data)
          rows.append((cls, sid))
    splits[f"fold_{fold}"] = stats(rows)

  def renamed(subjects: list[tuple[str, str]], n: int):
    cells = [(cls, sid, name, data) for cls, sid in subjects
             for name, data in _cells(cls, sid, n, rng)]
    order = rng.permutation(len(cells))
    return [(f"{i + 1}.bmp",) + cells[j] for i, j in enumerate(order)]

  prelim = renamed([(c, next_sid(c)) for c in ("all", "hem")
                    for _ in range(prelim_subjects_per_class)], prelim_cells_per_subject)
  lines = ["Patient_ID,new_names,labels"]
  for new, cls, _, name, data in prelim:
    sink.write(f"{prelim_dir}/{new}", data)
    lines.append(f"{name},{new},{int(cls == 'all')}")
  sink.write(prelim_csv, ("\n".join(lines) + "\n").encode())
  splits["prelim_test"] = stats([(cls, sid) for _, cls, sid, _, _ in prelim])

  final_classes = [("all", "hem")[i % 2] for i in range(final_subjects)]
  final = renamed([(c, next_sid(c)) for c in final_classes], final_cells_per_subject)
  truth = {}
  for new, cls, sid, _, data in final:
    sink.write(f"{final_dir}/{new}", data)
    truth[new] = [cls, sid]
  splits["final_test"] = {"num_examples": len(final), "classes": {"unlabelled": len(final)},
                          "subjects": {"": len(final)}}
  sink.close()
  return {"root": str(root), "layout": layout, "zipped": zipped, "files": sink.written,
          "splits": splits, "final_test_truth": truth}


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="manual_dir to write into")
  parser.add_argument("--layout", choices=LAYOUTS, default="kaggle")
  parser.add_argument("--zipped", action="store_true", help="write the zip archives instead")
  parser.add_argument("--subjects_per_class", type=int, default=2)
  parser.add_argument("--cells_per_subject", type=int, default=3)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  summary = write_synthetic_cnmc(
      args.out, layout=args.layout, zipped=args.zipped, seed=args.seed,
      subjects_per_class=args.subjects_per_class, cells_per_subject=args.cells_per_subject)
  summary.pop("files")
  print(json.dumps(summary, indent=1))


if __name__ == "__main__":
  main()
