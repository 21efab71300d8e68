"""Evaluation of InFlow against named OOD sets under three protocols, next to three baselines.

Protocols (all use the paper's score, `scores` convention 'paper'; OOD batches always go through the
attention test, batches of `batch_size` in order, the last partial batch scored):

* `paper`: in-distribution batches are scored with a = 1 forced, as the original evaluation did; the
  test still runs on them and its flags are reported, but they do not affect the scores.
* `strict`: in-distribution batches are scored with the a their own test gives, so false alarms count.
* `mixed`: batches of m images holding round(rho m) OOD images (at least 1) and in-distribution test
  images otherwise, drawn at random without replacement within a batch; for every rho in `mixed_rhos`
  and m in `mixed_batch_sizes`, the detection power = fraction of `mixed_n_batches` batches flagged
  (p < level), and at every m the false-alarm rate on as many pure in-distribution batches. The
  typicality test is run on the very same batches.

Baselines (per image unless said): `likelihood` = the NLL in bits/dim at a = 1 (`nll` convention);
`paper_score_a1` = the paper's score with a = 1 everywhere (no attention); `input_complexity` = NLL -
PNG bits/dim (Serra et al. 2020); `typicality` = the batch-level test of Nalisnick et al. 2019 on the
NLL, thresholds bootstrapped from `x_heldout` (held-out in-distribution images) at the same level as
the attention test.

Key streams: the permutation tests of the in-distribution batches use fold_in(key, 0), those of OOD
set s fold_in(key, 1 + s), the mixed protocol fold_in(key, 10_000) (`mixed.py` names its own).
The tables are plain dicts (JSON-serialisable); `inflow_jax.report.tables.format_table` formats them.
"""

import dataclasses
from typing import Dict, Mapping, Optional, Sequence, Tuple

import jax
import numpy as np

from inflow_jax import gates as conformal
from inflow_jax.evaluation import baselines as baselines_lib
from inflow_jax.evaluation.metrics import ood_metrics
from inflow_jax.evaluation.mixed import Gates, mixed_protocol, typicality_flags
from inflow_jax.gates.mmd_batches import BatchTests, attention_tests
from inflow_jax.model.density import flow_scores
from inflow_jax.utils.batching import batch_starts, batched
from inflow_jax.utils.checks import check_images

PROTOCOLS = ("paper", "strict", "mixed")
IN_DISTRIBUTION_STREAM = 0  # fold_in(key, 0): the in-distribution batches' tests
OOD_STREAM = 1  # fold_in(key, 1 + s): the tests of OOD set s
MIXED_STREAM = 10_000  # fold_in(key, 10_000): the mixed protocol


@dataclasses.dataclass(frozen=True)
class SetScores:
  """One set through the flow and the attention: per-image scores at a = 1 ('paper', 'nll'), the
  paper score with each batch's tested a (`tested`), and the batches' tests."""

  at_one: Dict[str, np.ndarray]
  tested: np.ndarray
  tests: BatchTests


def check_inputs(
  x_in,
  ood_sets: Mapping[str, np.ndarray],
  batch_size: int,
  protocols: Sequence[str],
  x_heldout,
  needs_typicality: bool,
) -> None:
  """Every check of `evaluate_ood`'s inputs (images scanned once each)."""
  unknown = set(protocols) - set(PROTOCOLS)
  if unknown or not protocols:
    raise ValueError(f"protocols must be a non-empty subset of {PROTOCOLS}, got {tuple(protocols)}")
  if not ood_sets:
    raise ValueError("ood_sets is empty: give at least one named OOD set")
  check_images(x_in, name="x_in", value_range=(0.0, 1.0))
  for name, x in ood_sets.items():
    check_images(
      x,
      name=f"ood_sets[{name!r}]",
      spatial=x_in.shape[1:3],
      channels=x_in.shape[3],
      value_range=(0.0, 1.0),
    )
  for name, n in [("x_in", x_in.shape[0])] + [
    (f"ood_sets[{k!r}]", v.shape[0]) for k, v in ood_sets.items()
  ]:
    if batch_size > n:
      raise ValueError(f"batch_size {batch_size} is larger than {name}, which holds {n} images")
  if needs_typicality:
    if x_heldout is None:
      raise ValueError(
        "the typicality test (baselines or the mixed protocol) needs x_heldout: "
        "held-out in-distribution images"
      )
    check_images(
      x_heldout,
      name="x_heldout",
      spatial=x_in.shape[1:3],
      channels=x_in.shape[3],
      value_range=(0.0, 1.0),
    )


def scores_at_one(model, variables, x: np.ndarray, batch_size: int) -> Dict[str, np.ndarray]:
  """{'paper', 'nll'}: per-image scores with a = 1, `batch_size` images per pass (unchecked)."""
  return batched(lambda xb: flow_scores(model, variables, xb, 1.0), x, batch_size)


def score_set(model, variables, mmd_state, x: np.ndarray, batch_size: int, key) -> SetScores:
  """A set's scores at a = 1 and through the test: passed batches keep their a = 1 paper scores,
  flagged ones are rescored with a = 0 (= `score_batches`). Unchecked."""
  at_one = scores_at_one(model, variables, x, batch_size)
  tests = attention_tests(mmd_state, x, batch_size, key)
  tested = at_one["paper"].copy()
  for i in np.flatnonzero(tests.flagged):
    sl = slice(tests.starts[i], tests.starts[i + 1])
    tested[sl] = np.asarray(flow_scores(model, variables, x[sl], 0.0)["paper"])
  return SetScores(at_one=at_one, tested=tested, tests=tests)


def batch_row(set_scores: SetScores) -> Dict:
  """The per-set batch counts and p-values of a table row."""
  tests = set_scores.tests
  return {
    "n_images": int(tests.starts[-1]),
    "n_batches": int(tests.flagged.size),
    "batches_flagged": int(tests.flagged.sum()),
    "p_values": tests.p_values.tolist(),
  }


def fit_typicality(
  model,
  variables,
  x_heldout,
  sets,
  batch_size: int,
  mixed_batch_sizes,
  level: float,
  n_bootstrap: int,
  seed: int,
) -> baselines_lib.TypicalityState:
  """The typicality test's entropy and thresholds for every batch size the evaluation tests."""
  sizes = {int(m) for m in mixed_batch_sizes}
  for x in sets:
    sizes |= set(np.diff(batch_starts(x.shape[0], batch_size)).tolist())
  nll_heldout = scores_at_one(model, variables, np.asarray(x_heldout, np.float32), batch_size)[
    "nll"
  ]
  return baselines_lib.fit_typicality(
    nll_heldout, sorted(sizes), level=level, n_bootstrap=n_bootstrap, seed=seed
  )


def baseline_rows(in_scores: SetScores, out_scores: SetScores, png_in, png_out, typicality) -> Dict:
  """The baselines' entries of an OOD set's row."""
  nll_in, nll_out = in_scores.at_one["nll"], out_scores.at_one["nll"]
  return {
    "likelihood": ood_metrics(nll_in, nll_out),
    "paper_score_a1": ood_metrics(in_scores.at_one["paper"], out_scores.at_one["paper"]),
    "input_complexity": ood_metrics(nll_in - png_in, nll_out - png_out),
    "typicality_batches_flagged": int(
      typicality_flags(typicality, nll_out, out_scores.tests.starts).sum()
    ),
  }


def ood_table(
  model,
  variables,
  mmd_state,
  x_in,
  ood_sets: Mapping[str, np.ndarray],
  *,
  key: jax.Array,
  batch_size: int = 250,
  protocols: Sequence[str] = PROTOCOLS,
  baselines: bool = True,
  x_heldout: Optional[np.ndarray] = None,
  mixed_rhos: Sequence[float] = (0.1, 0.25, 0.5, 1.0),
  mixed_batch_sizes: Sequence[int] = (10, 25, 50, 100, 250),
  mixed_n_batches: int = 20,
  n_bootstrap: int = 1000,
  seed: int = 0,
  conformal_state: Optional[conformal.ConformalState] = None,
  combination: str = "bonferroni",
) -> Tuple[Dict, Dict[str, Dict[str, np.ndarray]]]:
  """(table, figure scores): `evaluate_ood`'s table, and {score name: {set name ('in' for x_in):
  per-image scores}} for `inflow_jax.report.plots.plot_all`.

  Args:
    model, variables: the InFlow flow (either `paper_compat`).
    mmd_state: the fitted attention test (`inflow_jax.gates.mmd.fit_mmd`).
    x_in: (N, H, W, C) float32 in-distribution test images in [0, 1].
    ood_sets: {name: (N_k, H, W, C) float32 images in [0, 1]}.
    key: PRNG key of the permutation tests (streams: see the module docstring).
    batch_size: images per tested batch (2 <= batch_size <= every set's size).
    protocols: a subset of ('paper', 'strict', 'mixed').
    baselines: add the likelihood, paper-score-at-a=1, input-complexity and typicality baselines.
    x_heldout: held-out in-distribution images (not in x_in, ideally not in the reference set) for the
      typicality test's entropy estimate and bootstrap; needed for the typicality test ('mixed' or
      baselines).
    mixed_rhos, mixed_batch_sizes, mixed_n_batches: the mixed protocol's grid and batches per cell.
    n_bootstrap: bootstrap batches per batch size of the typicality thresholds.
    seed: seed of the mixed-batch draws and of the bootstrap.
    conformal_state, combination: the conformal attention (`inflow_jax.gates.fit_conformal`,
      calibrated on images in none of these sets) and the rule combining it with the MMD test: adds
      the per-image rows ('image_score': metrics of its per-image scores, 'image_false_alarm' on x_in)
      and the 'conformal' and 'combined' gates of the mixed protocol.
  """
  needs_typicality = baselines or "mixed" in protocols
  check_inputs(x_in, ood_sets, batch_size, protocols, x_heldout, needs_typicality)
  x_in = np.asarray(x_in, np.float32)
  ood_sets = {k: np.asarray(v, np.float32) for k, v in ood_sets.items()}
  level = float(mmd_state.level)
  table = {
    "settings": {
      "batch_size": int(batch_size),
      "level": level,
      "n_permutations": int(mmd_state.n_permutations),
      "n_reference": int(mmd_state.n_reference),
      "protocols": list(protocols),
      "seed": int(seed),
    }
  }

  score = lambda x, stream: score_set(
    model, variables, mmd_state, x, batch_size, jax.random.fold_in(key, stream)
  )
  in_scores = score(x_in, IN_DISTRIBUTION_STREAM)
  out_scores = {name: score(x, OOD_STREAM + s) for s, (name, x) in enumerate(ood_sets.items())}
  table["in_distribution"] = batch_row(in_scores)
  typicality = None
  if needs_typicality:
    typicality = fit_typicality(
      model,
      variables,
      x_heldout,
      [x_in, *ood_sets.values()],
      batch_size,
      mixed_batch_sizes if "mixed" in protocols else (),
      level,
      n_bootstrap,
      seed,
    )
    table["settings"]["typicality_entropy_bpd"] = typicality.entropy
    table["settings"]["n_heldout"] = int(x_heldout.shape[0])
  figure_scores = {"paper": {"in": in_scores.at_one["paper"]}, "strict": {"in": in_scores.tested}}
  if baselines:
    table["in_distribution"]["typicality_batches_flagged"] = int(
      typicality_flags(typicality, in_scores.at_one["nll"], in_scores.tests.starts).sum()
    )
    png_in = baselines_lib.png_bits_per_dim(x_in)
    figure_scores.update(
      {
        "likelihood": {"in": in_scores.at_one["nll"]},
        "input_complexity": {"in": in_scores.at_one["nll"] - png_in},
      }
    )

  image = None
  if conformal_state is not None:
    image = {
      name: _image_p_values(model, variables, conformal_state, x)
      for name, x in [("in", x_in), *ood_sets.items()]
    }
    mean_shift = conformal_state.mean_shift
    table["settings"].update(
      conformal=conformal_state.batch_test,
      combination=combination,
      n_calibration=conformal_state.n_calibration,
      mean_shift_components=None if mean_shift is None else mean_shift.n_components,
    )
    table["in_distribution"]["image_false_alarm"] = float(np.mean(image["in"][1] < level))
    figure_scores["image_score"] = {"in": image["in"][0]}
  table["ood"] = {}
  for name, x_out in ood_sets.items():
    scores = out_scores[name]
    row = batch_row(scores)
    if "paper" in protocols:
      row["paper"] = ood_metrics(in_scores.at_one["paper"], scores.tested)
    if "strict" in protocols:
      row["strict"] = ood_metrics(in_scores.tested, scores.tested)
    figure_scores["paper"][name] = figure_scores["strict"][name] = scores.tested
    if baselines:
      png_out = baselines_lib.png_bits_per_dim(x_out)
      row.update(baseline_rows(in_scores, scores, png_in, png_out, typicality))
      figure_scores["likelihood"][name] = scores.at_one["nll"]
      figure_scores["input_complexity"][name] = scores.at_one["nll"] - png_out
    if image is not None:
      row["image_score"] = ood_metrics(image["in"][0], image[name][0])
      row["image_flagged"] = float(np.mean(image[name][1] < level))
      figure_scores["image_score"][name] = image[name][0]
    table["ood"][name] = row

  if "mixed" in protocols:
    p_of = lambda name: None if image is None else image[name][1]
    table["mixed"] = mixed_protocol(
      Gates(mmd_state, typicality, conformal_state, combination),
      x_in,
      in_scores.at_one["nll"],
      p_of("in"),
      ood_sets,
      {name: s.at_one["nll"] for name, s in out_scores.items()},
      {name: p_of(name) for name in ood_sets},
      mixed_rhos,
      mixed_batch_sizes,
      mixed_n_batches,
      jax.random.fold_in(key, MIXED_STREAM),
      seed,
    )
  for protocol in ("paper", "strict"):
    if protocol not in protocols:
      figure_scores.pop(protocol)
  return table, figure_scores


def _image_p_values(model, variables, state, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """(per-image conformal scores, their p-values) of x."""
  scores = conformal.image_scores(state, model, variables, x)[0]
  return scores, conformal.image_p_values(state, scores)
