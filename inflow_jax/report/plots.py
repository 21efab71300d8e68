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


def _save(fig, path: str) -> str:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fig.savefig(path, dpi=120, bbox_inches="tight")
  plt.close(fig)
  return path


STYLES = {"inflow": "-", "typicality": "--", "conformal": ":", "combined": "-."}
STYLE_NAMES = {"-": "solid", "--": "dashed", ":": "dotted", "-.": "dash-dot"}


def plot_mixed_power(mixed: Mapping, path: str, title: Optional[str] = None) -> str:
  """Detection power vs. batch size, one panel per OOD set, one line per OOD fraction rho.

  Args:
    mixed: the `mixed` entry of an `evaluate_ood` table: `batch_sizes`, `rhos`,
      `false_alarm` {method: [rate per batch size]}, `power` {set: {method: [[rate per batch size]
      per rho]}}, methods 'inflow' (the MMD attention test, solid), 'typicality' (dashed) and, when
      present, 'conformal' (dotted) and 'combined' (dash-dot).
  """
  batch_sizes = list(mixed["batch_sizes"])
  rhos = list(mixed["rhos"])
  names = list(mixed["power"])
  fig, axes = plt.subplots(
    1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False, sharey=True
  )
  colours = plt.cm.viridis(np.linspace(0.0, 0.85, len(rhos)))
  for ax, name in zip(axes[0], names):
    for method, style in STYLES.items():
      if method not in mixed["power"][name]:
        continue
      for rho, colour, power in zip(rhos, colours, mixed["power"][name][method]):
        label = ("one OOD image" if rho == 0 else f"rho={rho:g}") if method == "inflow" else None
        ax.plot(batch_sizes, power, style, marker="o", ms=3, color=colour, label=label)
      if method in mixed["false_alarm"]:
        ax.plot(
          batch_sizes,
          mixed["false_alarm"][method],
          style,
          color="red",
          label="in-dist false alarms" if method == "inflow" else None,
        )
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())  # no log-scale minor labels
    ax.set_xticks(batch_sizes)
    ax.set_xticklabels([str(m) for m in batch_sizes])
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("batch size")
    ax.set_title(name)
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel("fraction of batches flagged")
  present = [m for m in STYLES if m in mixed["false_alarm"]]
  axes[0][0].legend(
    fontsize=7, title="\n".join(f"{STYLE_NAMES[STYLES[m]]}: {m}" for m in present), title_fontsize=7
  )
  if title:
    fig.suptitle(title, y=1.0)
    fig.tight_layout(rect=(0, 0, 1, 0.93))  # keep the title above the panels' titles
  return _save(fig, path)


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
  scores: Mapping[str, np.ndarray], path: str, title: Optional[str] = None, bins: int = 60
) -> str:
  """Overlaid histograms of the per-image scores of each named set, on common bins."""
  fig, ax = plt.subplots(figsize=(6.0, 3.8))
  values = [np.asarray(s, dtype=np.float64) for s in scores.values()]
  edges = np.histogram_bin_edges(np.concatenate(values), bins=bins)
  for (name, _), v in zip(scores.items(), values):
    ax.hist(v, bins=edges, histtype="stepfilled", alpha=0.35, density=True, label=name)
  ax.set_xlabel("score (higher = more OOD)")
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
      table["mixed"], os.path.join(directory, "mixed_power.png"), "mixed protocol"
    )
  for score_name, sets in scores.items():
    outs = {k: v for k, v in sets.items() if k != "in"}
    paths[f"roc_{score_name}"] = plot_roc_curves(
      sets["in"], outs, os.path.join(directory, f"roc_{score_name}.png"), f"ROC: {score_name}"
    )
    paths[f"hist_{score_name}"] = plot_score_histograms(
      sets, os.path.join(directory, f"hist_{score_name}.png"), f"scores: {score_name}"
    )
  return paths
