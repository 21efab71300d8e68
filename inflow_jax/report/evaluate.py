"""`evaluate_ood`: the evaluation table of `inflow_jax.evaluation.protocols.ood_table` and, with a
`plot_dir`, its figures (`inflow_jax.report.plots`)."""

from typing import Dict, Mapping, Optional

import numpy as np

from inflow_jax.evaluation.protocols import ood_table
from inflow_jax.report import plots


def evaluate_ood(
  model,
  variables,
  mmd_state,
  x_in,
  ood_sets: Mapping[str, np.ndarray],
  *,
  plot_dir: Optional[str] = None,
  **settings,
) -> Dict:
  """Scores `x_in` against each OOD set; returns a JSON-serialisable table (see
  `inflow_jax.report.tables.format_table`). `settings` are `ood_table`'s keyword arguments (key,
  batch_size, protocols, baselines, x_heldout, mixed_*, n_bootstrap, seed); with `plot_dir` the PNG
  figures are written there and their paths listed under 'figures'."""
  table, figure_scores = ood_table(model, variables, mmd_state, x_in, ood_sets, **settings)
  if plot_dir is not None:
    table["figures"] = plots.plot_all(table, figure_scores, plot_dir)
  return table
