"""The mixed protocol: detection power on batches where OOD images mix with in-distribution ones.

For every batch size m in `batch_sizes`: the false-alarm rate on `n_batches` pure in-distribution
batches; for every OOD set and OOD fraction rho in `rhos`: the fraction of `n_batches` batches of
k = max(1, round(rho m)) OOD and m - k in-distribution images flagged (rho = 0: exactly one OOD
image). Images are drawn without replacement within a batch (numpy Generator seeded with `seed`, in
the order of the table). Every gate runs on the very same batches: 'inflow' (the paper's MMD test),
'typicality', and, given per-image conformal p-values (`inflow_jax.gates`), 'conformal' (their batch
test) and 'combined' (that test, the MMD test and, where the conformal state has one, the mean-shift
test combined). The MMD test needs 2 images: at m = 1 its rate is NaN and 'combined' leaves it out.

Key streams (below the protocol's key): fold_in(key, j) for the false alarms at the j-th batch size,
fold_in(fold_in(fold_in(key, 1000 + s), r), j) for OOD set s, fraction r, batch size j; batch b of a
cell is tested with fold_in(cell_key, b).
"""

from typing import Dict, Mapping, Optional, Sequence

import jax
import numpy as np

from inflow_jax.evaluation import baselines as baselines_lib

MIXED_OOD_STREAM = 1000  # fold_in(key, 1000 + s): OOD set s


def typicality_flags(state: baselines_lib.TypicalityState, nll: np.ndarray, starts) -> np.ndarray:
  """The typicality test on each batch nll[starts[i]:starts[i+1]]."""
  return np.array(
    [baselines_lib.typicality_test(state, nll[lo:hi]) for lo, hi in zip(starts[:-1], starts[1:])]
  )


def _gate_rates(detector, typicality, cell_key, x, nll, image_p, m: int) -> Dict[str, float]:
  """The fraction of the batches x[b m : (b + 1) m] each gate flags (one `gate_batches` call)."""
  starts = np.arange(0, x.shape[0] + 1, m)
  rates = {"typicality": float(typicality_flags(typicality, nll, starts).mean())}
  has_conformal = detector.conformal_state_ is not None
  gate = detector.gate_batches(
    x, cell_key, batch_size=m, image_p=image_p if has_conformal else None, preprocessed=True
  )
  level = detector.level
  rates["inflow"] = float(np.mean(gate.p_mmd < level)) if m >= 2 else float("nan")
  if has_conformal:
    rates["conformal"] = float(np.mean(gate.p_conformal < level))
    rates["combined"] = float(np.mean(gate.p_combined < level))
  return rates


def mixed_protocol(
  detector,
  typicality,
  x_in: np.ndarray,
  nll_in: np.ndarray,
  p_in: Optional[np.ndarray],
  ood_sets: Mapping[str, np.ndarray],
  nll_out: Mapping[str, np.ndarray],
  p_out: Mapping[str, Optional[np.ndarray]],
  rhos: Sequence[float],
  batch_sizes: Sequence[int],
  n_batches: int,
  key: jax.Array,
  seed: int,
) -> Dict:
  """The protocol's table: rhos, batch_sizes, n_batches, false_alarm {method: [rate per m]}, power
  {set: {method: [[rate per m] per rho]}}. Unchecked inputs (`evaluate_ood` validated them); nll_*:
  per-image NLL bits/dim at a = 1; p_*: per-image conformal p-values (None without a conformal
  gate)."""
  rng = np.random.default_rng(seed)
  n_in = x_in.shape[0]
  table = {
    "rhos": [float(r) for r in rhos],
    "batch_sizes": [int(m) for m in batch_sizes],
    "n_batches": int(n_batches),
    "false_alarm": {},
    "power": {},
  }
  rates = lambda cell_key, m, draw: _cell_rates(detector, typicality, cell_key, m, draw, n_batches)
  for j, m in enumerate(batch_sizes):
    if m > n_in:
      raise ValueError(
        f"mixed batch size {m} is larger than the in-distribution set of {n_in} images"
      )
    draw = _Draw(rng, n_in, m, 0, x_in, nll_in, p_in, x_in, nll_in, p_in)
    for method, rate in rates(jax.random.fold_in(key, j), m, draw).items():
      table["false_alarm"].setdefault(method, []).append(rate)
  for s, (name, x_out) in enumerate(ood_sets.items()):
    power: Dict[str, list] = {}
    set_key = jax.random.fold_in(key, MIXED_OOD_STREAM + s)
    p_set = None if p_out is None or p_out.get(name) is None else p_out[name]
    for r, rho in enumerate(rhos):
      row: Dict[str, list] = {}
      for j, m in enumerate(batch_sizes):
        k = max(1, int(round(rho * m)))
        if k > x_out.shape[0]:
          raise ValueError(
            f"mixed batch (rho={rho}, m={m}) needs {k} images of {name!r}, "
            f"which has {x_out.shape[0]}"
          )
        draw = _Draw(rng, n_in, m, k, x_out, nll_out[name], p_set, x_in, nll_in, p_in)
        cell_key = jax.random.fold_in(jax.random.fold_in(set_key, r), j)
        for method, rate in rates(cell_key, m, draw).items():
          row.setdefault(method, []).append(rate)
      for method, values in row.items():
        power.setdefault(method, []).append(values)
    table["power"][name] = power
  return table


def _cell_rates(detector, typicality, cell_key, m: int, draw, n_batches: int) -> Dict[str, float]:
  """The gates' rates on n_batches batches of `draw` (drawn in order, then gathered)."""
  idx = [draw() for _ in range(n_batches)]
  gather = lambda which: np.concatenate([which(i_out, i_in) for i_out, i_in in idx])
  return _gate_rates(detector, typicality, cell_key, *(gather(which) for which in draw.fields), m)


class _Draw:
  """Draws (OOD indices, in-distribution indices) of one batch; `fields` gather x, nll and p."""

  def __init__(self, rng, n_in, m, k, x_out, nll_out, p_out, x_in, nll_in, p_in):
    self.rng, self.n_in, self.m, self.k, self.n_out = rng, n_in, m, k, x_out.shape[0]
    join = lambda a, b: (
      None if a is None else (lambda i_out, i_in: np.concatenate([a[i_out], b[i_in]]))
    )
    fields = [join(x_out, x_in), join(nll_out, nll_in), join(p_out, p_in)]
    self.fields = [f if f is not None else (lambda i_out, i_in: np.zeros(0)) for f in fields]

  def __call__(self):
    if self.k == 0:
      return np.zeros(0, np.int64), self.rng.choice(self.n_in, self.m, replace=False)
    return (
      self.rng.choice(self.n_out, self.k, replace=False),
      self.rng.choice(self.n_in, self.m - self.k, replace=False),
    )
