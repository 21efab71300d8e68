"""PNG figures of an evaluation (matplotlib, Agg backend: no display needed).

Each function writes one PNG to `path` and returns the path.
"""

import os
from typing import Dict, Mapping, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
from sklearn import metrics as sk_metrics

from inflow_jax.report.names import GATES, SCORES, gate_names


def _save(fig, path: str) -> str:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fig.savefig(path, dpi=120, bbox_inches="tight")
  plt.close(fig)
  return path


STYLES = {"inflow": "-", "typicality": "--", "conformal": ":", "combined": "-."}


def plot_mixed_power(
  mixed: Mapping, path: str, title: Optional[str] = None, labels: Mapping = GATES
) -> str:
  """Detection power vs. batch size: a grid of panels (at most 3 a row), one per OOD set, one
  colour per OOD fraction rho, one line style per gate; one legend for all panels.

  Args:
    mixed: the `mixed` entry of an `evaluate_ood` table: `batch_sizes`, `rhos`,
      `false_alarm` {gate: [rate per batch size]}, `power` {set: {gate: [[rate per batch size]
      per rho]}}, gates named as `inflow_jax.report.names.GATES`; labels: their legend labels
      (`names.gate_names`).
  """
  batch_sizes, rhos, names = list(mixed["batch_sizes"]), list(mixed["rhos"]), list(mixed["power"])
  ncols = min(3, len(names))
  nrows = -(-len(names) // ncols)
  fig, axes = plt.subplots(
    nrows, ncols, figsize=(3.6 * ncols, 3.0 * nrows), squeeze=False, sharey=True
  )
  colours = plt.cm.viridis(np.linspace(0.0, 0.85, len(rhos)))
  gates = [g for g in STYLES if g in mixed["false_alarm"]]
  for ax, name in zip(axes.flat, names):
    for gate in gates:
      for colour, power in zip(colours, mixed["power"][name].get(gate, [])):
        ax.plot(batch_sizes, power, STYLES[gate], marker="o", ms=3, color=colour)
      ax.plot(batch_sizes, mixed["false_alarm"][gate], STYLES[gate], color="red")
    _batch_size_axis(ax, batch_sizes)
    ax.set_title(name, fontsize=9)
  for ax in axes.flat[len(names) :]:
    ax.set_visible(False)
  for ax in axes[:, 0]:
    ax.set_ylabel("fraction of batches flagged")
  handles = [
    matplotlib.lines.Line2D([], [], color=c, marker="o", ms=3, label=_rho_label(r))
    for r, c in zip(rhos, colours)
  ]
  handles.append(
    matplotlib.lines.Line2D([], [], color="red", label="in-distribution (false alarms)")
  )
  handles += [
    matplotlib.lines.Line2D([], [], color="black", linestyle=STYLES[g], label=labels[g])
    for g in gates
  ]
  fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), fontsize=8,
             bbox_to_anchor=(0.5, 0.0))  # fmt: skip
  fig.suptitle(title or "mixed protocol")
  fig.tight_layout(rect=(0, 0.06 + 0.04 * (len(handles) > 4), 1, 0.97))
  return _save(fig, path)


def _rho_label(rho: float) -> str:
  return "one OOD image" if rho == 0 else f"OOD fraction {rho:g}"


def _batch_size_axis(ax, batch_sizes) -> None:
  ax.set_xscale("log")
  ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())  # no log-scale minor labels
  ax.set_xticks(batch_sizes)
  ax.set_xticklabels([str(m) for m in batch_sizes])
  ax.set_ylim(-0.03, 1.03)
  ax.set_xlabel("batch size (images)")
  ax.grid(alpha=0.3)


def plot_roc_curves(
  scores_in, scores_out: Mapping[str, np.ndarray], path: str, title: Optional[str] = None
) -> str:
  """ROC curves (OOD positive, higher score = more OOD) of each OOD set against `scores_in`."""
  fig, ax = plt.subplots(figsize=(4.5, 4.2))
  scores_in = np.asarray(scores_in, dtype=np.float64)
  for name, scores in scores_out.items():
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.concatenate([np.zeros(scores_in.size), np.ones(scores.size)])
    fpr, tpr, _ = sk_metrics.roc_curve(labels, np.concatenate([scores_in, scores]))
    ax.plot(fpr, tpr, label=f"{name} (AUROC {sk_metrics.auc(fpr, tpr):.3f})")
  ax.plot([0, 1], [0, 1], ":", color="grey")
  ax.set_xlabel("false-positive rate (in-distribution flagged)")
  ax.set_ylabel("true-positive rate (OOD flagged)")
  ax.legend(fontsize=7, loc="lower right")
  ax.set_title(title or "ROC")
  return _save(fig, path)


def plot_score_histograms(
  scores: Mapping[str, np.ndarray],
  path: str,
  title: Optional[str] = None,
  bins: int = 60,
  xlabel: str = "score (higher = more OOD)",
) -> str:
  """Overlaid histograms of the per-image scores of each named set, on common bins."""
  fig, ax = plt.subplots(figsize=(6.0, 3.8))
  values = [np.asarray(s, dtype=np.float64) for s in scores.values()]
  edges = np.histogram_bin_edges(np.concatenate(values), bins=bins)
  for (name, _), v in zip(scores.items(), values):
    ax.hist(v, bins=edges, histtype="stepfilled", alpha=0.35, density=True, label=name)
  ax.set_xlabel(xlabel)
  ax.set_ylabel("density")
  ax.legend(fontsize=7)
  ax.set_title(title or "scores per set")
  return _save(fig, path)


def plot_training_loss(
  steps: Sequence[int],
  losses: Sequence[float],
  path: str,
  title: Optional[str] = None,
  *,
  eval_steps: Sequence[int] = (),
  eval_values: Sequence[float] = (),
) -> str:
  """Training loss against step, and (when given) the held-out bits/dim at `eval_steps`."""
  steps = np.asarray(steps)
  losses = np.asarray(losses, dtype=np.float64)
  if steps.shape != losses.shape or steps.ndim != 1 or steps.size == 0:
    raise ValueError(
      "steps and losses must be non-empty 1-D arrays of equal length, got "
      f"{steps.shape}, {losses.shape}"
    )
  fig, ax = plt.subplots(figsize=(5.5, 3.5))
  ax.plot(steps, losses, lw=1, label="training loss")
  if len(eval_steps):
    ax.plot(eval_steps, eval_values, "o-", ms=3, lw=1, label="held-out bits/dim")
    ax.legend(fontsize=8)
  ax.set_xlabel("step")
  ax.set_ylabel("loss")
  ax.grid(alpha=0.3)
  ax.set_title(title or "training loss")
  return _save(fig, path)


def plot_all(
  table: Mapping, scores: Dict[str, Dict[str, np.ndarray]], directory: str
) -> Dict[str, str]:
  """The evaluation's figures in `directory`: mixed-protocol power, ROC and histograms per score.

  Args:
    table: an `evaluate_ood` table.
    scores: {score name: {set name: per-image scores}}, with the in-distribution set under 'in'.
  Returns:
    {figure name: path}.
  """
  paths = {}
  if "mixed" in table:
    paths["mixed_power"] = plot_mixed_power(
      table["mixed"],
      os.path.join(directory, "mixed_power.png"),
      "mixed protocol",
      gate_names(table),
    )
  for score_name, sets in scores.items():
    outs = {k: v for k, v in sets.items() if k != "in"}
    name, unit = SCORES.get(score_name, (score_name, "score (higher = more OOD)"))
    paths[f"roc_{score_name}"] = plot_roc_curves(
      sets["in"], outs, os.path.join(directory, f"roc_{score_name}.png"), f"ROC: {name}"
    )
    paths[f"hist_{score_name}"] = plot_score_histograms(
      {("in-distribution" if k == "in" else k): v for k, v in sets.items()},
      os.path.join(directory, f"hist_{score_name}.png"),
      f"scores: {name}",
      xlabel=unit,
    )
  return paths
