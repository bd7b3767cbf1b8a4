"""report.html of a trained run: every section, every image, the numbers of report.json; and the
page as a browser shows it (headless Chromium: no console message, the script ran, a screenshot)."""

from __future__ import annotations

import base64
import csv
import html.parser
import io
import json
import pathlib
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from leukojax.evaluation import report as report_lib

SECTIONS = ("run", "metrics", "figures", "gallery", "predictions")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0")


class _Page(html.parser.HTMLParser):
  """The parts of the page the tests read: section ids, image sources, table cells, gallery cards."""

  def __init__(self):
    super().__init__()
    self.ids, self.images, self.cells, self.cases, self.rows, self.links = [], [], [], [], [], []
    self._in_cell, self._table = False, None

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if "id" in attrs:
      self.ids.append(attrs["id"])
      if tag == "table":
        self._table = attrs["id"]
    if tag == "img":
      self.images.append(attrs.get("src", ""))
    if tag == "a" and not attrs.get("href", "#").startswith("#"):
      self.links.append(attrs["href"])
    if tag == "div" and "case" in attrs.get("class", "").split():
      self.cases.append(attrs)
    if tag == "tr" and self._table == "prediction-table" and "data-split" in attrs:
      self.rows.append(attrs)
    self._in_cell = tag in ("td", "th")

  def handle_endtag(self, tag):
    if tag == "table":
      self._table = None

  def handle_data(self, data):
    if self._in_cell and data.strip():
      self.cells.append(data.strip())


def _parse(path: pathlib.Path) -> _Page:
  page = _Page()
  page.feed(path.read_text(encoding="utf-8"))
  return page


@pytest.mark.xdist_group("sample_run")
def test_report_html_holds_every_section_image_and_number(sample_run):
  page_path = sample_run / "report.html"
  rep = json.loads((sample_run / "report.json").read_text())
  assert rep["html"] == "report.html" and rep["code"]
  page = _parse(page_path)
  assert all(section in page.ids for section in SECTIONS)
  assert "http://" not in page_path.read_text() and "https://" not in page_path.read_text()  # no network
  # Every image is embedded and decodes: the figures of report.json, then the gallery's thumbnails.
  assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
  for src in page.images:
    Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
  assert len(page.images) == len(rep["plots"]) + len(page.cases)
  # The numbers are report.json's, as report.md writes them (one renderer of the tables).
  for table in report_lib.tables(rep):
    for row in table.rows:
      assert all(cell in page.cells for cell in row), row
  test = rep["splits"]["test"]
  assert report_lib._cell(test, "AUC") in page.cells and str(test["TP"]) in page.cells
  # One prediction row per evaluated image; the wrong ones are those of the confusion matrices.
  n = {split: metrics["n"] for split, metrics in rep["splits"].items()}
  assert len(page.rows) == sum(n.values())
  wrong = sum(1 for r in page.rows if r.get("class") == "wrong")
  assert wrong == sum(m["FP"] + m["FN"] for m in rep["splits"].values())
  # The gallery shows, per split and true class, the mistakes with the most confident wrong calls.
  with open(sample_run / rep["predictions"]["test"]) as f:
    rows = list(csv.DictReader(f))
  p = np.array([float(r["p_pro_b"]) for r in rows])
  labels = np.array([int(r["label"]) for r in rows])
  missed_pro_b = sorted(p[(labels == 1) & (p < 0.5)])[:4]
  shown = [c for c in page.cases if "mistake" in c["class"]]
  assert len(shown) == sum(min(4, m["FP"]) + min(4, m["FN"]) for m in rep["splits"].values())
  test_files = {r["file_name"] for r in rows if int(r["label"]) == 1 and float(r["p_pro_b"]) in missed_pro_b}
  assert test_files <= {c["data-file"] for c in shown}


def _chromium() -> str:
  path = shutil.which("chromium") or shutil.which("chromium-browser")
  if not path:
    pytest.skip("Chromium is not installed here: `make test` installs Debian's chromium where apt-get can "
                "(as root); elsewhere `apt-get install chromium` enables this check.")
  return path


@pytest.mark.xdist_group("sample_run")
def test_report_html_renders_in_headless_chromium_without_console_messages(sample_run, tmp_path):
  chromium = _chromium()
  url = (sample_run / "report.html").resolve().as_uri()
  profile = [f"--user-data-dir={tmp_path / 'profile'}"]
  dom = subprocess.run([chromium, *CHROMIUM_FLAGS, *profile, "--dump-dom", url], capture_output=True,
                       text=True, timeout=120)
  assert dom.returncode == 0, dom.stderr[-2000:]
  console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
  assert not console, console[:5]
  rep = json.loads((sample_run / "report.json").read_text())
  total = sum(m["n"] for m in rep["splits"].values())
  assert f"{total} of {total} images" in dom.stdout  # the page's script ran to its end
  shot = tmp_path / "report.png"
  result = subprocess.run([chromium, *CHROMIUM_FLAGS, *profile, "--window-size=1280,2400", "--hide-scrollbars",
                           f"--screenshot={shot}", url], capture_output=True, text=True, timeout=120)
  assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
  pixels = np.asarray(Image.open(shot).convert("L"), np.float32)
  assert pixels.shape == (2400, 1280) and pixels.std() > 10  # drawn, not a blank page


@pytest.mark.xdist_group("sample_run")
def test_compare_html_holds_the_comparison_table_and_each_runs_curves(sample_run, tmp_path):
  from leukojax.evaluation import comparison, html_report

  runs = [str(sample_run), str(sample_run)]
  path = pathlib.Path(html_report.write_comparison(runs, "test", str(tmp_path / "out" / "compare.html")))
  page = _parse(path)
  assert {"comparison", "runs"} <= set(page.ids)
  _, rows, _ = comparison.rows(runs, "test")
  assert all(cell in page.cells for row in rows for cell in row)
  assert len(page.images) == 2 * 3  # per run: the test split's confusion matrix, ROC, precision-recall
  for src in page.images:
    Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
  assert [(path.parent / link).resolve() for link in page.links] == [sample_run.resolve() / "report.html"] * 2


@pytest.mark.xdist_group("sample_run")
def test_evaluate_explain_puts_gradcam_and_lime_beside_the_first_gallery_cases(sample_run, tmp_path):
  import sys

  from tests.conftest import REPO

  out = tmp_path / "explained"
  result = subprocess.run([sys.executable, "-m", "leukojax.evaluate", f"--workdir={sample_run}", f"--out_dir={out}",
                           "--split=test", "--explain=1", "--lime_samples=50"], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "explaining the gallery" in result.stderr  # the progress bar
  page = _parse(out / "report.html")
  figures = sorted((out / "explanations" / "gallery").glob("*.png"))
  assert len(figures) == 2  # one case for each evaluated split (val, test)
  rep = json.loads((out / "report.json").read_text())
  assert len(page.images) == len(rep["plots"]) + len(page.cases) + len(figures)
  text = (out / "report.html").read_text()
  assert text.count("IoU of Grad-CAM and LIME") == 2
