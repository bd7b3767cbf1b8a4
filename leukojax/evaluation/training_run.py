"""A training run as `leukojax.main` runs it: the train loop, validated every epoch, then the report.

The loop (`training.loop`) knows nothing of metrics or reports; this module gives it its
validation (`inference.evaluate_split` on the val split, every metric of `evaluation.metrics`) and,
when training ends, evaluates the best checkpoint with `run_evaluation.evaluate_run`, the function
`leukojax.evaluate` uses, so both write the same files.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ml_collections
from absl import logging

from leukojax.evaluation import config_check, inference, restore, run_evaluation
from leukojax.training import checkpoints, loop
from leukojax.training.state import ModelVariables


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       allow_config_change: Sequence[str] = ()) -> dict[str, Any]:
  """Trains, keeps the best validation state, evaluates it (report.json, report.md, plots) unless
  `eval.final_report` is False."""
  config_check.check_config(config)  # before any work: a bad config costs seconds, not a dataset build
  run = loop.setup(config, workdir, allow_config_change)
  eval_fn = inference.make_eval_fn(run.graphs)
  val_split = run.pipeline.eval_splits["val"]

  def validate(state) -> dict[str, float]:
    return inference.evaluate_split(eval_fn, state, val_split, run.mesh, config.eval.batch_size,
                                    run.pipeline.class_names).scalars()

  outcome = loop.train(run, validate)
  if outcome.preempted:
    return {"preempted_at_step": outcome.step}
  if run.config_changes:  # the run finished under them: from now on they are the workdir's config
    loop.write_config(config, workdir)
  if not config.eval.final_report:
    run.ckpt.close()
    logging.info("Trained to step %d; no report (eval.final_report=False): `python -m leukojax.evaluate "
                 "--workdir %s` evaluates the %s checkpoint (step %d).", run.schedule.total_steps, workdir,
                 outcome.checkpoint, outcome.step)
    return {"trained_to_step": run.schedule.total_steps, "checkpoint_step": outcome.step}
  target = checkpoints.abstract_like(
      ModelVariables(params=run.state.params, model_state=run.state.model_state),
      ModelVariables(params=run.state_shardings.params, model_state=run.state_shardings.model_state))
  variables = run.ckpt.restore_variables(outcome.step, target)
  run.ckpt.close()
  logging.info("Evaluating the %s checkpoint (step %d): report, plots and predictions.", outcome.checkpoint,
               outcome.step)
  trained = restore.TrainedRun(workdir=workdir, config=config, pipeline=run.pipeline, mesh=run.mesh,
                               graphs=run.graphs, variables=variables, step=outcome.step,
                               checkpoint=outcome.checkpoint, eval_fn=eval_fn)
  return run_evaluation.evaluate_run(trained)
