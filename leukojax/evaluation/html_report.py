"""report.html: one self-contained page per evaluation, for reading a run rather than parsing it.

Everything is embedded (figures and thumbnails as data URIs, a few lines of inline script): the
page opens from disk with no server and no network. Its tables are `report.tables`, the same rows
as report.md, so the two cannot disagree; its figures are the PNGs `run_evaluation.write_plots`
wrote. The error gallery (`gallery`) and the prediction table are what the Markdown report lacks.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from leukojax.evaluation import gallery, report
from leukojax.models import outputs

HTML_NAME = "report.html"

_STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1180px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:24px;margin:8px 0 4px}h2{font-size:19px;margin:28px 0 8px;border-bottom:1px solid #d5d9e0}
h3{font-size:16px;margin:18px 0 6px}nav{position:sticky;top:0;background:#1d2330;padding:8px 24px;z-index:2}
nav a{color:#e8ecf3;margin-right:18px;text-decoration:none;font-size:14px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:8px 0}dt{font-weight:600}dd{margin:0}
table{border-collapse:collapse;background:#fff;margin:6px 0 12px;font-size:13.5px}
th,td{border:1px solid #d5d9e0;padding:3px 8px}th{background:#eceff4;position:sticky;top:36px}
td.r,th.r{text-align:right;font-variant-numeric:tabular-nums}
.figures{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;background:#fff;padding:6px;border:1px solid #d5d9e0}
figure img{max-width:540px;width:100%;height:auto}figcaption{font-size:13px;color:#4a5263}
.cases{display:flex;flex-wrap:wrap;gap:8px;margin-bottom:8px}
.case{background:#fff;border:1px solid #d5d9e0;padding:6px;width:140px;font-size:12px;overflow-wrap:anywhere}
.case img{width:128px;height:128px;object-fit:contain;background:#000;display:block}
.case.mistake{border-color:#c0392b}.explained{display:flex;gap:8px;flex-basis:100%;align-items:flex-start}
figure.explanation img{max-width:900px}.case .p{font-weight:600}.empty{color:#6b7385;font-style:italic}
#predictions table{width:100%}#predictions th{cursor:pointer;user-select:none}
.controls{display:flex;gap:12px;align-items:center;margin:6px 0}.controls input[type=search]{width:260px}
tr.wrong td{background:#fdecea}
"""

# Sorting (click a header; numbers as numbers) and filtering (text, split, mistakes only).
_SCRIPT = """
(function(){
  var table=document.getElementById('prediction-table'); if(!table) return;
  var body=table.tBodies[0], rows=Array.prototype.slice.call(body.rows);
  var text=document.getElementById('filter-text'), split=document.getElementById('filter-split'),
      wrong=document.getElementById('filter-wrong'), count=document.getElementById('filter-count');
  function apply(){
    var q=text.value.toLowerCase(), s=split.value, w=wrong.checked, shown=0;
    rows.forEach(function(r){
      var ok=(!q||r.textContent.toLowerCase().indexOf(q)>=0)&&(!s||r.dataset.split===s)&&(!w||r.classList.contains('wrong'));
      r.style.display=ok?'':'none'; if(ok) shown++;
    });
    count.textContent=shown+' of '+rows.length+' images';
  }
  [text,split,wrong].forEach(function(e){e.addEventListener('input',apply);e.addEventListener('change',apply);});
  Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,col){
    th.addEventListener('click',function(){
      var up=th.dataset.order!=='asc'; th.dataset.order=up?'asc':'desc';
      rows.sort(function(a,b){
        var x=a.cells[col].dataset.v||a.cells[col].textContent, y=b.cells[col].dataset.v||b.cells[col].textContent;
        var nx=parseFloat(x), ny=parseFloat(y), c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);
        return up?c:-c;
      });
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
  apply();
})();
"""


def _e(value: Any) -> str:
  return html.escape(str(value), quote=True)


def _table_html(table: report.Table) -> str:
  head = "".join(f'<th class="{"r" if table.alignment(i) == "right" else ""}">{_e(h)}</th>'
                 for i, h in enumerate(table.header))
  body = "".join("<tr>" + "".join(f'<td class="{"r" if table.alignment(i) == "right" else ""}">{_e(c)}</td>'
                                  for i, c in enumerate(row)) + "</tr>" for row in table.rows)
  return (f"<h{table.level + 1}>{_e(table.title)}</h{table.level + 1}>"
          f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def _split_counts(rep: Mapping[str, Any]) -> str:
  parts = []
  for name, split in rep["splits"].items():
    images = split.get("n_images", split.get("n"))
    subjects = split.get("n_subjects")
    parts.append(f"{name}: {images} images" + (f" of {subjects} subjects" if subjects else ""))
  return "; ".join(parts)


def _header(rep: Mapping[str, Any]) -> str:
  thr, boot, build = rep.get("threshold"), rep["bootstrap"], rep.get("data_build") or {}
  if thr:
    threshold = (f"0.5 as in the papers (the tables' primary rule), and {thr['chosen']:.4f} chosen on the "
                 f"{thr['chosen_on']} split by {thr['criterion_text']}; no test image informs any choice")
  else:
    threshold = "none: the class of highest probability (arg-max)"
  skipped = build.get("skipped_corrupt") or []
  items = [
      ("Dataset", f"{rep['dataset']}, task {rep['task']} ({' vs '.join(rep['class_names'])})"),
      ("Data build", f"{build.get('name', 'unknown')}, " + (
          f"built with on_corrupt=skip: {len(skipped)} corrupt image(s) left out" if build.get("on_corrupt") == "skip"
          else "complete")),
      ("Protocol", f"{rep['protocol']}: {rep['protocol_note']}"),
      ("Splits", _split_counts(rep)),
      ("Checkpoint", f"step {rep['checkpoint_step']} ({rep['checkpoint']}), selected by {rep['selected_by']}"),
      ("Threshold", threshold),
      ("Intervals", f"{boot['confidence']:.0%} percentile bootstrap, {boot['n_resamples']} resamples of "
                    f"{boot['unit']}s, seed {boot['seed']}"),
      ("Test-time augmentation", rep["tta"]),
      ("Code", rep.get("code", "unknown")),
  ]
  rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items)
  return (f'<header id="run"><h1>{_e(rep["model"])} on {_e(rep["dataset"])}</h1><dl>{rows}</dl></header>')


def _figures(rep: Mapping[str, Any], out_dir: str) -> str:
  figures = []
  for name, path in rep.get("plots", {}).items():
    with Image.open(os.path.join(out_dir, path)) as picture:
      uri = gallery.png_data_uri(picture, max_px=None)
    figures.append(f'<figure><img alt="{_e(name)}" src="{uri}"><figcaption>{_e(name)}</figcaption></figure>')
  return f'<section id="figures"><h2>Figures</h2><div class="figures">{"".join(figures)}</div></section>'


def _explanation_html(record: Mapping[str, Any]) -> str:
  """The explanation figure of a case (Grad-CAM and LIME panels) and its agreement score."""
  with Image.open(record["png"]) as picture:
    uri = gallery.png_data_uri(picture, max_px=900)
  iou = record.get("iou")
  score = ("IoU of Grad-CAM and LIME: " + (f"{iou:.2f} (chance {record['iou_chance']:.2f})" if iou is not None
                                            else record.get("iou_note", "n/a")))
  return (f'<figure class="explanation"><img alt="explanation of {_e(record["file"])}" src="{uri}">'
          f"<figcaption>{_e(score)}</figcaption></figure>")


def _case_html(case: gallery.Case, thumbnail: str, explanation: Mapping[str, Any] | None) -> str:
  subject = f"<br>subject {_e(case.subject_id)}" if case.subject_id else ""
  card = (f'<div class="case {case.kind}" data-file="{_e(case.file_name)}"><img alt="{_e(case.file_name)}" '
          f'src="{thumbnail}"><span class="p">true {_e(case.true_class)}, P = {case.p_true:.3f}</span><br>'
          f'called {_e(case.predicted_class)} ({case.p_predicted:.3f}){subject}<br>'
          f'<span title="{_e(case.file_name)}">{_e(case.file_name[:22])}</span></div>')
  return card if explanation is None else f'<div class="explained">{card}{_explanation_html(explanation)}</div>'



def _gallery(cases: Sequence[gallery.Case], thumbs: Mapping[tuple[str, int], str], class_names: Sequence[str],
             rule: str, explained: Mapping[tuple[str, int], Mapping[str, Any]]) -> str:
  parts = [f'<section id="gallery"><h2>Error gallery</h2><p>Per true class: the most confident mistakes, then '
           f'the least confident correct calls ({_e(rule)}). P is the probability the model gave the true '
           'class.</p>']
  for split in dict.fromkeys(c.split for c in cases):
    parts.append(f"<h3>{_e(split)} split</h3>")
    for name in class_names:
      for kind, title in (("mistake", "most confident mistakes"), ("unsure", "least confident correct calls")):
        chosen = [c for c in cases if c.split == split and c.true_class == name and c.kind == kind]
        cards = "".join(_case_html(c, thumbs[(c.split, c.row)], explained.get((c.split, c.row)))
                        for c in chosen) or '<span class="empty">none</span>'
        parts.append(f"<h4>true {_e(name)}: {title}</h4><div class=\"cases\">{cards}</div>")
  return "".join(parts) + "</section>"


def _predictions(predictions: Mapping[str, Any], class_names: Sequence[str]) -> str:
  """A row per evaluated image; `predictions[split]` = (probs, labels, metadata)."""
  binary = len(class_names) == 2
  header = ["split", "file", "subject", "true", "predicted"] + (
      [f"P({class_names[-1]})"] if binary else [f"P({c})" for c in class_names])
  rows = []
  for split, (probs, labels, metadata) in predictions.items():
    class_probs = gallery.class_probabilities(probs)
    decided = np.asarray(outputs.decide(np.asarray(probs, np.float64), xp=np))
    for i, label in enumerate(np.asarray(labels)):
      shown = [class_probs[i, -1]] if binary else class_probs[i]
      cells = [split, gallery.as_text(metadata["file_name"][i]),
               gallery.as_text(metadata["subject_id"][i]) if "subject_id" in metadata else "",
               class_names[label], class_names[decided[i]]]
      tds = "".join(f"<td>{_e(c)}</td>" for c in cells) + "".join(
          f'<td class="r" data-v="{p:.6f}">{p:.4f}</td>' for p in shown)
      wrong = ' class="wrong"' if decided[i] != label else ""
      rows.append(f'<tr data-split="{_e(split)}"{wrong}>{tds}</tr>')
  options = "".join(f'<option value="{_e(s)}">{_e(s)}</option>' for s in predictions)
  head = "".join(f"<th>{_e(h)}</th>" for h in header)
  return ('<section id="predictions"><h2>Predictions</h2><div class="controls">'
          '<input type="search" id="filter-text" placeholder="filter: file, subject, class">'
          f'<select id="filter-split"><option value="">all splits</option>{options}</select>'
          '<label><input type="checkbox" id="filter-wrong"> mistakes only</label><span id="filter-count"></span>'
          f'</div><table id="prediction-table"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
          "</table></section>")


def render(rep: Mapping[str, Any], *, out_dir: str, cases: Sequence[gallery.Case],
           thumbs: Mapping[tuple[str, int], str], predictions: Mapping[str, Any],
           explained: Mapping[tuple[str, int], Mapping[str, Any]] | None = None) -> str:
  """The whole page as one string (`out_dir`: where the report's plots are)."""
  rule = "threshold 0.5" if len(rep["class_names"]) == 2 else "arg-max"
  sections = [("run", "Run"), ("metrics", "Metrics"), ("figures", "Figures"), ("gallery", "Error gallery"),
              ("predictions", "Predictions")]
  nav = "".join(f'<a href="#{key}">{title}</a>' for key, title in sections)
  metrics = "".join(_table_html(t) for t in report.tables(rep))
  title = f"{rep['model']} on {rep['dataset']}: step {rep['checkpoint_step']}"
  return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
          f'content="width=device-width,initial-scale=1"><title>{_e(title)}</title><style>{_STYLE}</style></head>'
          f'<body><nav>{nav}</nav><main>{_header(rep)}<section id="metrics"><h2>Metrics</h2>{metrics}</section>'
          f'{_figures(rep, out_dir)}{_gallery(cases, thumbs, rep["class_names"], rule, explained or {})}'
          f'{_predictions(predictions, rep["class_names"])}</main><script>{_SCRIPT}</script></body></html>\n')


def write(rep: Mapping[str, Any], out_dir: str, *, results: Mapping[str, Any], eval_splits: Mapping[str, Any],
          per_class: int = gallery.DEFAULT_PER_CLASS, explain: gallery.Explain | None = None,
          explain_limit: int = 0) -> str:
  """Selects the gallery of every evaluated split, reads its images, explains the first
  `explain_limit` of each split with `explain` (if given), writes report.html."""
  cases, images = [], {}
  for split, result in results.items():
    chosen = gallery.select_cases(split, result.probs, result.labels, result.metadata, rep["class_names"], per_class)
    cases += chosen
    if chosen:
      images.update({(split, row): image for row, image in gallery.read_images(chosen, eval_splits[split]).items()})
  thumbs = {key: gallery.png_data_uri(image) for key, image in images.items()}
  explained = {}
  if explain is not None and explain_limit > 0:
    explained = dict(explain(gallery.to_explain(cases, explain_limit), images))
  predictions = {split: (r.probs, r.labels, r.metadata) for split, r in results.items()}
  path = os.path.join(out_dir, HTML_NAME)
  with open(path, "w", encoding="utf-8") as f:
    f.write(render(rep, out_dir=out_dir, cases=cases, thumbs=thumbs, predictions=predictions, explained=explained))
  return path


COMPARE_NAME = "compare.html"


def _run_card(workdir: str, rep: Mapping[str, Any], split: str, out_dir: str) -> str:
  figures = []
  for name, path in rep.get("plots", {}).items():
    if name in ("ROC", "precision-recall") or name.startswith(f"confusion matrix ({split},"):
      with Image.open(os.path.join(workdir, path)) as picture:
        figures.append(f'<figure><img alt="{_e(name)}" src="{gallery.png_data_uri(picture, max_px=420)}">'
                       f"<figcaption>{_e(name)}</figcaption></figure>")
  page = os.path.join(workdir, rep.get("html", HTML_NAME))
  link = (f' (<a href="{_e(os.path.relpath(page, out_dir))}">its report</a>)' if os.path.exists(page) else "")
  facts = (f"{rep['dataset']}, {rep['protocol']}; checkpoint step {rep['checkpoint_step']} ({rep['checkpoint']}, "
           f"selected by {rep['selected_by']}); code {rep.get('code', 'unknown')}")
  name = os.path.basename(os.path.normpath(workdir))
  return (f"<h3>{_e(name)}: {_e(rep['model'])}{link}</h3><p>{_e(facts)}</p>"
          f'<div class="figures">{"".join(figures)}</div>')


def write_comparison(workdirs: Sequence[str], split: str, path: str) -> str:
  """compare.html: the comparison table of `leukojax.compare`, then each run's facts and curves."""
  from leukojax.evaluation import comparison  # pylint: disable=g-import-not-at-top  (scipy)

  header, rows, notes = comparison.rows(workdirs, split)
  out_dir = os.path.dirname(os.path.abspath(path))
  os.makedirs(out_dir, exist_ok=True)
  table = report.Table(f"{split} split", header, rows, text_columns=(0, 1))
  cards = "".join(_run_card(w, comparison.read_report(w), split, out_dir) for w in workdirs)
  notes_html = "".join(f"<p>{_e(n)}</p>" for n in notes)
  page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
          f'content="width=device-width,initial-scale=1"><title>Comparison of {len(workdirs)} runs</title>'
          f'<style>{_STYLE}</style></head><body><main><h1>Comparison of {len(workdirs)} runs</h1>'
          f'<section id="comparison">{_table_html(table)}{notes_html}</section>'
          f'<section id="runs"><h2>Runs</h2>{cards}</section></main></body></html>\n')
  with open(path, "w", encoding="utf-8") as f:
    f.write(page)
  return path
