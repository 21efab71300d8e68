"""The mixed protocol: detection power on batches where OOD images mix with in-distribution ones.

For every batch size m in `batch_sizes`: the false-alarm rate on `n_batches` pure in-distribution
batches; for every OOD set and OOD fraction rho in `rhos`: the fraction of `n_batches` batches of
k = max(1, round(rho m)) OOD and m - k in-distribution images flagged. Images are drawn without
replacement within a batch (numpy Generator seeded with `seed`, in the order of the table). The InFlow
attention test and the typicality test run on the very same batches.

Key streams (below the protocol's key): fold_in(key, j) for the false alarms at the j-th batch size,
fold_in(fold_in(fold_in(key, 1000 + s), r), j) for OOD set s, fraction r, batch size j; batch b of a
cell is tested with fold_in(cell_key, b).
"""
from typing import Callable, Dict, Mapping, Sequence, Tuple

import jax
import numpy as np

from inflow_jax.attention.batches import attention_tests
from inflow_jax.evaluation import baselines as baselines_lib

MIXED_OOD_STREAM = 1000   # fold_in(key, 1000 + s): OOD set s


def typicality_flags(state: baselines_lib.TypicalityState, nll: np.ndarray, starts) -> np.ndarray:
  """The typicality test on each batch nll[starts[i]:starts[i+1]]."""
  return np.array([baselines_lib.typicality_test(state, nll[lo:hi])
                   for lo, hi in zip(starts[:-1], starts[1:])])


def _cell(mmd_state, typicality, cell_key, draw: Callable[[], Tuple[np.ndarray, np.ndarray]],
          m: int, n_batches: int) -> Tuple[float, float]:
  """Fractions of `n_batches` drawn batches of m images flagged by (InFlow, typicality)."""
  drawn = [draw() for _ in range(n_batches)]
  x = np.concatenate([images for images, _ in drawn])
  nll = np.concatenate([values for _, values in drawn])
  tests = attention_tests(mmd_state, x, m, cell_key)
  return float(tests.flagged.mean()), float(typicality_flags(typicality, nll, tests.starts).mean())


def mixed_protocol(mmd_state, typicality, x_in: np.ndarray, nll_in: np.ndarray,
                   ood_sets: Mapping[str, np.ndarray], nll_out: Mapping[str, np.ndarray],
                   rhos: Sequence[float], batch_sizes: Sequence[int], n_batches: int, key: jax.Array,
                   seed: int) -> Dict:
  """The protocol's table: rhos, batch_sizes, n_batches, false_alarm {method: [rate per m]}, power
  {set: {method: [[rate per m] per rho]}}, methods 'inflow' and 'typicality'. Unchecked inputs
  (`evaluate_ood` validated them); nll_*: per-image NLL bits/dim at a = 1."""
  rng = np.random.default_rng(seed)
  n_in = x_in.shape[0]
  table = {"rhos": [float(r) for r in rhos], "batch_sizes": [int(m) for m in batch_sizes],
           "n_batches": int(n_batches), "false_alarm": {"inflow": [], "typicality": []}, "power": {}}
  for j, m in enumerate(batch_sizes):
    if m > n_in:
      raise ValueError(f"mixed batch size {m} is larger than the in-distribution set of {n_in} images")

    def draw_in(m=m):
      idx = rng.choice(n_in, m, replace=False)
      return x_in[idx], nll_in[idx]

    inflow, typ = _cell(mmd_state, typicality, jax.random.fold_in(key, j), draw_in, m, n_batches)
    table["false_alarm"]["inflow"].append(inflow)
    table["false_alarm"]["typicality"].append(typ)

  for s, (name, x_out) in enumerate(ood_sets.items()):
    power = {"inflow": [], "typicality": []}
    for r, rho in enumerate(rhos):
      row = {"inflow": [], "typicality": []}
      for j, m in enumerate(batch_sizes):
        k = max(1, int(round(rho * m)))
        if k > x_out.shape[0]:
          raise ValueError(f"mixed batch (rho={rho}, m={m}) needs {k} images of {name!r}, "
                           f"which has {x_out.shape[0]}")

        def draw(m=m, k=k, x_out=x_out, nll=nll_out[name]):
          i_out = rng.choice(x_out.shape[0], k, replace=False)
          i_in = rng.choice(n_in, m - k, replace=False)
          return (np.concatenate([x_out[i_out], x_in[i_in]]),
                  np.concatenate([nll[i_out], nll_in[i_in]]))

        set_key = jax.random.fold_in(key, MIXED_OOD_STREAM + s)
        cell_key = jax.random.fold_in(jax.random.fold_in(set_key, r), j)
        inflow, typ = _cell(mmd_state, typicality, cell_key, draw, m, n_batches)
        row["inflow"].append(inflow)
        row["typicality"].append(typ)
      for method in power:
        power[method].append(row[method])
    table["power"][name] = power
  return table
