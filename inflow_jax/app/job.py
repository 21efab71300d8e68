"""The InFlow job: train (or resume, or load a pretrained flow), fit the detector, evaluate it.

`run_job(config, workdir, mode)` is what `run.py` calls (the flax examples' `train_and_evaluate`):

  python run.py --config configs/digits.py --workdir /tmp/inflow_digits
  python run.py --config configs/default.py --workdir DIR --config.train.num_steps=100
  python run.py --config configs/cifar10_pretrained.py --workdir DIR --config.checkpoint_path=PATH

The path of a config: checked (`app.config_checks`) -> workdir locked and the stored config compared
(`app.workdir`) -> flow and data loaded (`app.build.load_model`, `app.datasets`) -> the flow trained
or restored (`training`) -> the detector built from the config and fitted (`app.build`) ->
evaluated through its methods (`app.evaluate`) -> saved to `<workdir>/detector/`
(`detector.job_files`) -> report (`report`).

Modes: `train` (train or resume up to config.train.num_steps; with config.encoder.enabled the
encoder too, on every process), `evaluate` (restore the newest checkpoints, or the pretrained one,
and write the report), `all` (both). Every input (config keys,
dataset names, labels, batch sizes vs devices, attack settings, checkpoints) is checked before any
training starts. The workdir holds `checkpoints/`, `metrics.jsonl`, `report.json`, `report.md`, the
PNG figures and `detector/`.
"""

import contextlib
import pathlib
import time
from typing import Any, Dict, Optional

import jax
import ml_collections
from absl import logging

from inflow_jax import training
from inflow_jax.app import workdir as workdir_lib
from inflow_jax.app.build import fitted_detector, load_model, trained_encoder
from inflow_jax.app.config_checks import check_config
from inflow_jax.app.datasets import load_data
from inflow_jax.app.evaluate import evaluate
from inflow_jax.detector.job_files import save_job_detector
from inflow_jax.report import plots
from inflow_jax.report.tables import format_adversarial_report, format_table
from inflow_jax.report.write import write_report
from inflow_jax.utils import stored_config


def initialize_distributed(config: ml_collections.ConfigDict) -> None:
  """`jax.distributed.initialize` when config.train.distributed (before any other JAX call)."""
  c = config.train
  if c.distributed:
    jax.distributed.initialize(c.coordinator_address, c.num_processes, c.process_id)
    logging.info(
      "process %d of %d, %d devices in all",
      jax.process_index(),
      jax.process_count(),
      jax.device_count(),
    )


def run_job(
  config: ml_collections.ConfigDict,
  workdir,
  mode: str = "all",
  *,
  progress: bool = True,
  force_resume: bool = False,
) -> Optional[Dict[str, Any]]:
  """The whole job (see the module docstring); returns the evaluation table (None for mode=train).

  Every check comes first: the config (`check_config`), a writable workdir, its lock (a second run
  on the same workdir fails at once), the stored config against this one (`check_resume`;
  force_resume skips the comparison), the pretrained checkpoint and every data set.
  """
  timings, start = {}, time.perf_counter()
  check_config(config, mode)
  workdir = pathlib.Path(workdir)
  is_main = jax.process_index() == 0
  if is_main:
    workdir_lib.probe_writable(workdir)
  with workdir_lib.WorkdirLock(workdir) if is_main else contextlib.nullcontext():
    stored_step = workdir_lib.check_resume(config, workdir, mode, force_resume)
    model, variables = load_model(config)
    sets = load_data(config, mode)
    timings["load"] = time.perf_counter() - start
    variables, step = _trained_variables(
      config, workdir, mode, model, variables, sets, stored_step, timings, progress
    )
    trained = None
    if mode != "evaluate" and config.encoder.enabled:  # every process, beside the flow
      tick = time.perf_counter()
      trained = trained_encoder(config, workdir, sets, progress)
      timings["encoder"] = time.perf_counter() - tick
    if mode == "train" or not is_main:
      return None  # the evaluation is single-process; process 0 writes the report
    return fit_evaluate_and_report(
      config, workdir, model, variables, sets, step, timings, start, progress, trained
    )


def _trained_variables(
  config, workdir, mode, model, variables, sets, stored_step, timings, progress
):
  """(variables, checkpoint step): trained (or resumed), the pretrained ones, or (mode=evaluate)
  the newest checkpoint's; (None, None) for the processes that do not evaluate."""
  step = None
  if variables is None and mode != "evaluate":
    if jax.process_index() == 0 and stored_step is None:
      stored_config.write_config(workdir, config.to_dict())  # stored with the first checkpoint
    tick = time.perf_counter()
    variables = training.train(
      model, sets["train"], config, workdir, x_eval=sets.get("eval"), progress=progress
    ).variables
    timings["train"] = time.perf_counter() - tick
    step = config.train.num_steps
  if mode == "train":
    return None, None
  if variables is None:
    variables, step = training.restore_variables(
      model, config, workdir, sets["train"][: config.train.batch_size]
    )
    logging.info("evaluating the checkpoint of step %d", step)
  return variables, step


def fit_evaluate_and_report(
  config, workdir, model, variables, sets, step, timings, start, progress=True, trained=None
):
  """After training: the detector fitted, evaluated and saved, the report written (the table before
  the figures, so a plotting error keeps it); returns the table. trained: `trained_encoder`'s
  (encoder, summary) when the training phase made it, else restored here on process 0 alone."""
  if trained is None:
    tick = time.perf_counter()
    trained = trained_encoder(config, workdir, sets, progress, jax.local_devices())
    timings["encoder"] = time.perf_counter() - tick
  encoder, encoder_summary = trained
  tick = time.perf_counter()
  detector = fitted_detector(config, model, training.host_copy(variables), sets, encoder)
  timings["fit_attention"] = time.perf_counter() - tick
  table, figure_scores = evaluate(detector, sets, config, timings, progress)
  if encoder_summary is not None:  # a trained encoder joins a conformal state's per-image view
    semantic_scores = list(detector.conformal_state_.semantic.scores)
    table["encoder"] = {**encoder_summary, "semantic_scores": semantic_scores}
  if stored_config.read_config(workdir) is None:  # training stores it with its first checkpoint
    stored_config.write_config(workdir, config.to_dict())
  save_job_detector(workdir, detector, sets["train_shape"])
  timings["total"] = time.perf_counter() - start
  write_report(workdir, config, table, timings, checkpoint_step=step, with_figures=False)
  table["figures"] = plots.plot_all(table, figure_scores, str(workdir))
  paths = write_report(workdir, config, table, timings, checkpoint_step=step)
  print(format_table(table))
  if "adversarial" in table:
    print("\nAdversarial sets:\n" + format_adversarial_report(table["adversarial"]))
  print(f"\nreport: {paths['markdown']}, {paths['json']}; total {timings['total']:.0f} s")
  return table


def train_and_evaluate(config: ml_collections.ConfigDict, workdir) -> Optional[Dict[str, Any]]:
  """The flax examples' entry point: `run_job(config, workdir, "all")`."""
  return run_job(config, workdir, "all")
