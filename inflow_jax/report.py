"""The job's report: `report.json` (everything, machine-readable), `report.md` (for a person) and
the PNG figures, all in the workdir.

The evaluation table and its figures (ROC curves, score histograms, mixed-protocol power) come from
`inflow_jax.evaluate.evaluate_ood`, its "adversarial" entry (when config.adversarial.enabled) from
`inflow_jax.adversarial.evaluation.evaluate_adversarial`; this module adds the training-loss curve
(from the workdir's `metrics.jsonl`), the run's settings and timings, and writes the files.
"""
import json
import os
import pathlib
import platform
from typing import Any, Dict, Mapping, Optional

import jax
import ml_collections
import numpy as np

from inflow_jax import plots
from inflow_jax import train as train_lib
from inflow_jax.adversarial.evaluation import eps_name, format_adversarial_report, set_name_prefix
from inflow_jax.evaluate import format_table

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
LOSS_FIGURE = "training_loss.png"


def training_summary(workdir) -> Optional[Dict[str, Any]]:
  """Steps, losses and throughput logged in `<workdir>/metrics.jsonl` (None when nothing logged)."""
  records = train_lib.read_metrics(workdir)
  if not records:
    return None
  return {
      "steps": [r["step"] for r in records],
      "loss": [r["loss"] for r in records],           # mean over each logging interval
      "last_loss": [r["last_loss"] for r in records],
      "images_per_s": [r["images_per_s"] for r in records],
  }


def _environment() -> Dict[str, Any]:
  return {"jax": jax.__version__, "backend": jax.default_backend(), "devices": jax.device_count(),
          "processes": jax.process_count(), "python": platform.python_version(),
          "cpu_count": os.cpu_count()}


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


def _markdown(config, table, training, timings, figures) -> str:
  data = config.data
  lines = ["# InFlow report", "",
           f"In-distribution: `{data.train}` split `{data.train_split}` (training and attention "
           f"reference), `{data.test}` split `{data.test_split}` (test); OOD sets "
           f"(split `{data.ood_split}`): {', '.join(f'`{n}`' for n in data.ood)}.", ""]
  if config.get("checkpoint_path"):
    lines += [f"Model: the pretrained checkpoint `{config.checkpoint_path}` (not trained here).", ""]
  else:
    m = config.model
    lines += [f"Model: InFlow, {m.num_blocks} coupling blocks, width {m.width}, clamp {m.clamp}, "
              f"{m.num_scales} scale(s), glow={m.glow}.", ""]
  if training:
    t = config.train
    lines += ["## Training", "",
              f"{training['steps'][-1]} steps of batch {t.batch_size}, Adam lr {t.learning_rate} "
              f"(betas {t.b1}, {t.b2}), L2 {t.weight_decay}, loss `{t.get('loss', 'paper')}`. Loss "
              f"{training['loss'][0]:.4g} (first {config.train.log_every} steps) -> "
              f"{training['last_loss'][-1]:.4g} (last step); "
              f"{np.median(training['images_per_s']):.0f} images/s (median over logging intervals).", ""]
  lines += ["## OOD detection", "", format_table({k: v for k, v in table.items() if k != "figures"}), ""]
  if table.get("adversarial"):
    lines += _adversarial_markdown(config, table["adversarial"])
  lines += ["## Figures", ""]
  lines += [f"![{name}]({pathlib.Path(path).name})" for name, path in figures.items()]
  lines += ["", "## Timings", "", "| stage | seconds |", "| --- | --- |"]
  lines += [f"| {stage} | {seconds:.1f} |" for stage, seconds in timings.items()]
  return "\n".join(lines) + "\n"


def _adversarial_markdown(config, table) -> list:
  adv, data = config.adversarial, config.data
  attack = adv.attack
  lines = ["## Adversarial inputs", ""]
  if table.get("classifier"):
    lines.append(
        f"`{set_name_prefix(data.test)}_pgd{{k}}`: the in-distribution test images perturbed by "
        f"{attack.num_steps}-step PGD (L-infinity, epsilon = k/255, k in "
        f"{', '.join(eps_name(e) for e in attack.epsilons)}) "
        f"against a CNN classifier trained on `{data.train}` `{data.train_split}` "
        f"({adv.train.num_steps} steps of batch {adv.train.batch_size}).")
    lines.append("")
  lines += [f"`{{ood}}_adaptive_llh` / `{{ood}}_adaptive_mmd`: OOD images perturbed by PGD at epsilon "
            f"{eps_name(attack.adaptive_epsilon)}/255 to raise the flow log-likelihood / to lower the "
            "attention test's MMD^2. Every set is scored as an OOD set against the clean test images.",
            "", format_adversarial_report(table), ""]
  return lines


def write_report(workdir, config: ml_collections.ConfigDict, table: Mapping,
                 timings: Mapping[str, float]) -> Dict[str, str]:
  """Writes report.json, report.md and the training-loss figure; returns {file kind: path}.

  Args:
    workdir: the job's directory (holds metrics.jsonl and the evaluation's figures).
    config: the job's config (stored in report.json).
    table: the `evaluate_ood` table (its 'figures' entry lists the figures it wrote).
    timings: {stage: seconds}.
  """
  workdir = pathlib.Path(workdir)
  training = training_summary(workdir)
  figures = dict(table.get("figures", {}))
  if training:
    figures["training_loss"] = plots.plot_training_loss(
        training["steps"], training["loss"], str(workdir / LOSS_FIGURE),
        f"training loss ({config.train.get('loss', 'paper')}), mean per {config.train.log_every} steps")
  report = {"config": config.to_dict(), "environment": _environment(), "training": training,
            "evaluation": table, "figures": figures, "timings_s": dict(timings)}
  json_path, md_path = workdir / REPORT_JSON, workdir / REPORT_MD
  json_path.write_text(json.dumps(_jsonable(report), indent=1) + "\n")
  md_path.write_text(_markdown(config, table, training, timings, figures))
  return {"json": str(json_path), "markdown": str(md_path), **figures}
