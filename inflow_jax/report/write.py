"""The job's report: `report.json` (everything, machine-readable), `report.md` (for a person) and
the PNG figures, all in the workdir.

The evaluation table and its figures (ROC curves, score histograms, mixed-protocol power) come from
`inflow_jax.evaluation.protocols.evaluate_ood`, its "adversarial" entry (when
config.adversarial.enabled) from `inflow_jax.adversarial.evaluation.evaluate_adversarial`; this
module adds the training-loss curve (from the workdir's `metrics.jsonl`), the run's settings and
timings, and writes the files (the markdown comes from `inflow_jax.report.tables`).
"""

import json
import os
import pathlib
import platform
from typing import Any, Dict, Mapping, Optional

import jax
import ml_collections
import numpy as np

from inflow_jax.report import plots
from inflow_jax.report.tables import report_markdown
from inflow_jax.training.flow import read_metrics

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
LOSS_FIGURE = "training_loss.png"


def training_summary(workdir) -> Optional[Dict[str, Any]]:
  """Steps, losses and throughput logged in `<workdir>/metrics.jsonl` (None when nothing logged)."""
  records = read_metrics(workdir)
  if not records:
    return None
  return {
    "steps": [r["step"] for r in records],
    "eval_steps": [r["step"] for r in records if "eval_bpd" in r],  # train.eval_every
    "eval_bpd": [r["eval_bpd"] for r in records if "eval_bpd" in r],
    "loss": [r["loss"] for r in records],  # mean over each logging interval
    "last_loss": [r["last_loss"] for r in records],
    "images_per_s": [r["images_per_s"] for r in records],
    "skipped_steps": records[-1].get("skipped_steps", 0),  # train.skip_factor
  }


def _environment() -> Dict[str, Any]:
  return {
    "jax": jax.__version__,
    "backend": jax.default_backend(),
    "devices": jax.device_count(),
    "processes": jax.process_count(),
    "python": platform.python_version(),
    "cpu_count": os.cpu_count(),
  }


def _jsonable(value):
  if isinstance(value, Mapping):
    return {str(k): _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, (np.integer, np.floating, np.bool_)):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  return value


def write_report(
  workdir,
  config: ml_collections.ConfigDict,
  table: Mapping,
  timings: Mapping[str, float],
  *,
  checkpoint_step: Optional[int] = None,
  with_figures: bool = True,
) -> Dict[str, str]:
  """Writes report.json, report.md (and, with_figures, the training-loss figure); returns {file
  kind: path}. Each file is written to a temporary name and renamed, so a failure keeps the previous
  one.

  Args:
    workdir: the job's directory (holds metrics.jsonl and the evaluation's figures).
    config: the job's config (stored in report.json).
    table: the evaluation table (its 'figures' entry lists the figures it wrote).
    timings: {stage: seconds}.
    checkpoint_step: the training step of the evaluated checkpoint (None: a pretrained model).
    with_figures: False writes the table alone (the job does so before drawing any figure).
  """
  workdir = pathlib.Path(workdir)
  training = training_summary(workdir)
  figures = dict(table.get("figures", {}))  # absent when the evaluation wrote no figures
  if training and with_figures:
    figures["training_loss"] = plots.plot_training_loss(
      training["steps"],
      training["loss"],
      str(workdir / LOSS_FIGURE),
      f"training loss ({config.train.loss}), mean per {config.train.log_every} steps",
      eval_steps=training["eval_steps"],
      eval_values=training["eval_bpd"],
    )
  report = {
    "config": config.to_dict(),
    "environment": _environment(),
    "training": training,
    "checkpoint_step": checkpoint_step,
    "evaluation": table,
    "figures": figures,
    "timings_s": dict(timings),
  }
  json_path, md_path = workdir / REPORT_JSON, workdir / REPORT_MD
  _write_atomically(json_path, json.dumps(_jsonable(report), indent=1) + "\n")
  _write_atomically(
    md_path, report_markdown(config, table, training, timings, figures, checkpoint_step)
  )
  return {"json": str(json_path), "markdown": str(md_path), **figures}


def _write_atomically(path: pathlib.Path, text: str) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text)
  os.replace(tmp, path)
