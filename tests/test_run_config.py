"""A workdir defends its config: checked whole before any work, compared on rerun, one clear error.

The unit tests drive `run_config` and `config_check` directly; the CLI tests run `leukojax.main`
as a user would, on a copy of the shared C-NMC MobileNet workdir (tests/conftest.py).
"""

import json
import pathlib
import shutil

import pytest

from leukojax.data import images
from leukojax.errors import ConfigError
from leukojax.evaluation import config_check
from leukojax.training import run_config
from tests.conftest import CNMC_MOBILENET, CNMC_RUN, NO_REPORT, cnmc_mobilenet_flags, run_main

STORED = {"train": {"epochs": 4, "learning_rate": 0.001, "fractions": [0.7, 0.3]},
          "data": {"data_dir": "/a"}, "runtime": {"jax": "0.1"}}


def test_check_rerun_refuses_changes_names_them_and_allows_resumable_ones(tmp_path):
  same = {**STORED, "data": {"data_dir": "/moved"}, "runtime": {"jax": "0.2"}}  # paths and runtime are free
  assert run_config.check_rerun(STORED, same, workdir="w", has_checkpoints=True) == {}
  changed = {**STORED, "train": {"epochs": 6, "learning_rate": 0.01, "fractions": (0.7, 0.3)}}
  with pytest.raises(run_config.ConfigChangeError) as error:
    run_config.check_rerun(STORED, changed, workdir="w", has_checkpoints=True)
  message = str(error.value)
  assert "train.epochs: 4 -> 6" in message and "train.learning_rate: 0.001 -> 0.01" in message
  assert "fractions" not in message and "new --workdir" in message  # a tuple equals its JSON list
  only_epochs = {**STORED, "train": {**STORED["train"], "epochs": 6}}
  with pytest.raises(run_config.ConfigChangeError, match="--allow_config_change=train.epochs"):
    run_config.check_rerun(STORED, only_epochs, workdir="w", has_checkpoints=True)
  assert run_config.check_rerun(STORED, only_epochs, workdir="w", has_checkpoints=True,
                                allow=["train.epochs"]) == {"train.epochs": (4, 6)}
  with pytest.raises(ConfigError, match="only train.epochs"):
    run_config.check_rerun(STORED, changed, workdir="w", has_checkpoints=True, allow=["train.learning_rate"])
  # Nothing trained yet (no checkpoints): nothing to protect.
  assert run_config.check_rerun(STORED, changed, workdir="w", has_checkpoints=False) == {}
  (tmp_path / "config.json").write_text("{truncated")
  with pytest.raises(ConfigError, match="not valid JSON"):
    run_config.read_stored(str(tmp_path))


def test_config_check_names_the_bad_field_before_any_work():
  from leukojax.configs import baselines

  config_check.check_config(baselines.get_config("mobilenet,cnmc,smoke"))
  for field, value, expected in [("model.name", "mobilenett", "unknown model 'mobilenett'"),
                                 ("model.dtype", "float16", "model.dtype='float16'"),
                                 ("train.best_metric", "acuracy", "train.best_metric='acuracy'"),
                                 ("train.optimizer", "adamm", "adamm"),
                                 ("data.task", "eight_class", "Unknown task 'eight_class'"),
                                 ("data.image_size", 16, "below 32"),
                                 ("model.backbone_width_divisor", 2, "baselines have no divisor")]:
    config = baselines.get_config("mobilenet,cnmc,smoke")
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(ConfigError, match=expected):
      config_check.check_config(config)


def test_narrowed_backbones_are_for_the_hybrid_from_scratch_only():
  from leukojax.configs import hybrid

  smoke = hybrid.get_config("smoke")
  assert smoke.model.backbone_width_divisor == 8
  config_check.check_config(smoke)
  smoke.model.pretrained.enabled = True  # no weight file fits a narrowed backbone
  with pytest.raises(ConfigError, match="backbone_width_divisor=8 narrows the hybrid's backbones from scratch"):
    config_check.check_config(smoke)
  smoke = hybrid.get_config("smoke")
  smoke.model.backbone_width_divisor = 3
  with pytest.raises(ConfigError, match="does not divide"):
    config_check.check_config(smoke)


def test_a_folder_without_images_is_an_error_naming_it(tmp_path):
  (tmp_path / "empty" / "sub").mkdir(parents=True)
  (tmp_path / "empty" / "notes.txt").write_text("no images here")
  with pytest.raises(images.ImageReadError, match=f"The folder {tmp_path / 'empty'} holds no image files"):
    images.expand_image_paths([str(tmp_path / "empty")])
  (tmp_path / "empty" / "sub" / "10.bmp").write_bytes(b"")
  (tmp_path / "empty" / "sub" / "2.bmp").write_bytes(b"")
  assert [pathlib.Path(p).name for p in images.expand_image_paths([str(tmp_path / "empty")])] == ["2.bmp", "10.bmp"]


def _fails_cleanly(result, *expected: str) -> str:
  out = result.stderr + result.stdout
  assert result.returncode == 1, out[-3000:]
  assert "Traceback" not in out, out[-3000:]
  for text in expected:
    assert text in out, out[-3000:]
  return out


def test_unknown_or_bad_fields_fail_in_one_message_before_anything_is_written(tmp_path):
  workdir, data_dir = tmp_path / "work", tmp_path / "tfds"
  flags = [f"--config.data.data_dir={data_dir}"]
  result = run_main(workdir, *flags, "--config.train.learning_rat=0.1", config=CNMC_MOBILENET)
  _fails_cleanly(result, "the config has no field 'train.learning_rat'", "train.learning_rate")
  result = run_main(workdir, *flags, "--config.model.name=mobilenett", config=CNMC_MOBILENET)
  _fails_cleanly(result, "leukojax.main: error: model.name: unknown model 'mobilenett'")
  assert not workdir.exists() and not data_dir.exists()  # no dataset built, no file written


@CNMC_RUN
def test_rerun_with_changed_config_is_refused_then_more_epochs_resume_when_allowed(cnmc_mobilenet_run, tmp_path):
  workdir = tmp_path / "work"
  shutil.copytree(cnmc_mobilenet_run, workdir)
  stored = (workdir / "config.json").read_bytes()
  flags = cnmc_mobilenet_flags(cnmc_mobilenet_run.parent / "tfds")
  result = run_main(workdir, *flags, "--config.model.head_widths=(12,)", "--config.train.learning_rate=0.5",
                    config=CNMC_MOBILENET)
  _fails_cleanly(result, "model.head_widths:", "train.learning_rate:", "-> 0.5", "Nothing was changed")
  assert (workdir / "config.json").read_bytes() == stored
  result = run_main(workdir, *flags, "--config.train.epochs=5", config=CNMC_MOBILENET)
  _fails_cleanly(result, "train.epochs: 4 -> 5", "--allow_config_change=train.epochs")
  assert (workdir / "config.json").read_bytes() == stored
  result = run_main(workdir, *flags, "--config.train.epochs=5", "--allow_config_change=train.epochs",
                    NO_REPORT, config=CNMC_MOBILENET)  # a free field: no change to allow
  assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
  assert "Resuming from step 36" in result.stdout + result.stderr
  history = [json.loads(line) for line in (workdir / "history.jsonl").read_text().splitlines()]
  assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
  assert json.loads((workdir / "config.json").read_text())["train"]["epochs"] == 5  # the run finished
  (change,) = [json.loads(line) for line in (workdir / run_config.HISTORY).read_text().splitlines()]
  assert change["changes"] == {"train.epochs": [4, 5]}


def test_a_field_added_later_is_no_change_at_its_default():
  stored = {"model": {"pretrained": {"enabled": False}}}
  assert not run_config.differences(stored, {"model": {"pretrained": {"enabled": False, "custom_weights": False}}})
  assert run_config.differences(stored, {"model": {"pretrained": {"enabled": False, "custom_weights": True}}}) == {
      "model.pretrained.custom_weights": (False, True)}


def test_config_json_is_never_seen_half_written_by_a_process_reading_it(tmp_path):
  """The 2-process resume regression: process 0 rewrote config.json in place while process 1 read
  it, and process 1 stopped on "config.json is not valid JSON". Every read during 200 rewrites
  must parse, and no temporary file may be left behind."""
  import threading

  from leukojax.configs import hybrid
  from leukojax.training import loop

  config = hybrid.get_config("smoke")
  loop.write_config(config, str(tmp_path))
  stop, failures, reads = threading.Event(), [], [0]

  def reader():
    while not stop.is_set():
      try:
        run_config.read_stored(str(tmp_path))
        reads[0] += 1
      except ConfigError as error:
        failures.append(str(error))

  thread = threading.Thread(target=reader)
  thread.start()
  for _ in range(200):
    loop.write_config(config, str(tmp_path))
  stop.set()
  thread.join()
  assert not failures, failures[:1]
  assert reads[0] > 0 and sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
