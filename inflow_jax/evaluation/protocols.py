"""Evaluation of a detector against named OOD sets under three protocols, next to three baselines.

Protocols (all use the paper's score, convention 'paper'; OOD batches always go through the
attention test, batches of `batch_size` in order, the last partial batch scored):

* `paper`: in-distribution batches are scored with a = 1 forced, as the original evaluation did;
  the test still runs on them and its flags are reported, but they do not affect the scores.
* `strict`: in-distribution batches are scored with the a their own test gives, so false alarms
  count.
* `mixed`: batches of m images holding round(rho m) OOD images (at least 1) and in-distribution
  test images otherwise (`inflow_jax.evaluation.mixed`).

Baselines (per image unless said): `likelihood` = the NLL in bits/dim at a = 1; `paper_score_a1` =
the paper's score with a = 1 everywhere (no attention); `input_complexity` = NLL - PNG bits/dim
(Serra et al. 2020); `typicality` = the batch-level test of Nalisnick et al. 2019 on the NLL,
thresholds bootstrapped from `x_heldout` (held-out in-distribution images) at the test's level.
Each protocol and baseline is a small evaluator (`inflow_jax.evaluation.evaluators`); every set goes
through the detector once (`evaluation_context`) and the evaluators read those scores.

Key streams: the permutation tests of the in-distribution batches use fold_in(key, 0), those of OOD
set s fold_in(key, 1 + s), the mixed protocol fold_in(key, 10_000) (`mixed.py` names its own).
The tables are plain dicts (JSON-serialisable); `inflow_jax.report.tables.format_table` formats
them.
"""

import dataclasses
from typing import Dict, Mapping, Optional, Sequence, Tuple

import jax
import numpy as np
import tqdm

from inflow_jax.detector import InFlowDetector
from inflow_jax.evaluation import baselines as baselines_lib
from inflow_jax.evaluation.anchors import AnchorState, anchor_scores
from inflow_jax.evaluation.evaluators import EVALUATORS
from inflow_jax.evaluation.set_scores import SetScores, batch_row, score_set
from inflow_jax.utils.batching import batch_starts
from inflow_jax.utils.checks import check_images

PROTOCOLS = ("paper", "strict", "mixed")
IN_DISTRIBUTION_STREAM = 0  # fold_in(key, 0): the in-distribution batches' tests
OOD_STREAM = 1  # fold_in(key, 1 + s): the tests of OOD set s


@dataclasses.dataclass(frozen=True)
class EvalSettings:
  """batch_size: images per tested batch (2 <= batch_size <= every set's size); protocols: a subset
  of PROTOCOLS; baselines: add the baselines' rows; mixed_*: the mixed protocol's grid and batches
  per cell; n_bootstrap: bootstrap batches per size of the typicality thresholds; seed: of the
  mixed-batch draws and the bootstrap."""

  batch_size: int = 250
  protocols: Sequence[str] = PROTOCOLS
  baselines: bool = True
  mixed_rhos: Sequence[float] = (0.1, 0.25, 0.5, 1.0)
  mixed_batch_sizes: Sequence[int] = (10, 25, 50, 100, 250)
  mixed_n_batches: int = 20
  n_bootstrap: int = 1000
  seed: int = 0

  @property
  def needs_typicality(self) -> bool:
    return self.baselines or "mixed" in self.protocols

  def evaluators(self, has_conformal: bool, has_anchors: bool = False) -> Tuple[str, ...]:
    """The evaluators these settings choose, in the table's order."""
    chosen = [p for p in ("paper", "strict") if p in self.protocols]
    chosen += ["baselines"] if self.baselines else []
    chosen += ["image"] if has_conformal else []
    chosen += ["anchors"] if has_anchors else []
    return tuple(chosen + (["mixed"] if "mixed" in self.protocols else []))


@dataclasses.dataclass
class EvalContext:
  """Every set through the detector once: what the evaluators read."""

  detector: InFlowDetector
  settings: EvalSettings
  key: jax.Array
  x_in: np.ndarray
  ood_sets: Dict[str, np.ndarray]
  in_scores: SetScores
  out_scores: Dict[str, SetScores]
  typicality: Optional[baselines_lib.TypicalityState]
  image: Optional[Dict[str, Tuple[np.ndarray, np.ndarray]]]
  anchors: Optional[Dict[str, Dict[str, np.ndarray]]] = None


def check_inputs(
  x_in, ood_sets: Mapping[str, np.ndarray], settings: EvalSettings, x_heldout
) -> None:
  """Every check of the evaluation's inputs (images scanned once each)."""
  protocols = tuple(settings.protocols)
  if set(protocols) - set(PROTOCOLS) or not protocols:
    raise ValueError(f"protocols must be a non-empty subset of {PROTOCOLS}, got {protocols}")
  if not ood_sets:
    raise ValueError("ood_sets is empty: give at least one named OOD set")
  check_images(x_in, name="x_in", value_range=(0.0, 1.0))
  shape = dict(spatial=x_in.shape[1:3], channels=x_in.shape[3], value_range=(0.0, 1.0))
  for name, x in ood_sets.items():
    check_images(x, name=f"ood_sets[{name!r}]", **shape)
  sizes = [("x_in", x_in.shape[0])] + [
    (f"ood_sets[{k!r}]", v.shape[0]) for k, v in ood_sets.items()
  ]
  for name, n in sizes:
    if settings.batch_size > n:
      raise ValueError(
        f"batch_size {settings.batch_size} is larger than {name}, which holds {n} images"
      )
  if settings.needs_typicality:
    if x_heldout is None:
      raise ValueError(
        "the typicality test (baselines or the mixed protocol) needs x_heldout: "
        "held-out in-distribution images"
      )
    check_images(x_heldout, name="x_heldout", **shape)


def fit_typicality(detector, x_heldout, sets, settings: EvalSettings):
  """The typicality test's entropy and thresholds for every batch size the evaluation tests."""
  sizes = {int(m) for m in settings.mixed_batch_sizes} if "mixed" in settings.protocols else set()
  for x in sets:
    sizes |= set(np.diff(batch_starts(x.shape[0], settings.batch_size)).tolist())
  x_heldout = np.asarray(x_heldout, np.float32)
  nll = detector.flow_scores(x_heldout, 1.0, batch_size=settings.batch_size, preprocessed=True)
  return baselines_lib.fit_typicality(
    nll["nll"],
    sorted(sizes),
    level=detector.level,
    n_bootstrap=settings.n_bootstrap,
    seed=settings.seed,
  )


def evaluation_context(
  detector,
  x_in,
  ood_sets,
  settings: EvalSettings,
  key,
  x_heldout,
  progress: bool = False,
  anchor_state: Optional[AnchorState] = None,
):
  """Scores every set once (the tests' key streams of the module docstring); `progress`: a bar of
  the sets on stderr."""
  bar = tqdm.tqdm(total=1 + len(ood_sets), desc="evaluate", unit="sets", disable=not progress)

  def score(x, stream):
    scores = score_set(detector, x, settings.batch_size, jax.random.fold_in(key, stream))
    bar.update()
    return scores

  in_scores = score(x_in, IN_DISTRIBUTION_STREAM)
  out_scores = {name: score(x, OOD_STREAM + s) for s, (name, x) in enumerate(ood_sets.items())}
  bar.close()
  typicality = None
  if settings.needs_typicality:
    typicality = fit_typicality(detector, x_heldout, [x_in, *ood_sets.values()], settings)
  image = None
  if detector.conformal_state_ is not None:
    image = {}
    for name, x in [("in", x_in), *ood_sets.items()]:
      scores = detector.image_scores(x, preprocessed=True)
      image[name] = (scores, detector.p_values_of_scores(scores))
  anchors = None
  if anchor_state is not None:
    anchors = {
      name: anchor_scores(anchor_state, x) for name, x in [("in", x_in), *ood_sets.items()]
    }
  return EvalContext(
    detector, settings, key, x_in, dict(ood_sets), in_scores, out_scores, typicality, image, anchors
  )


def detector_table(
  detector: InFlowDetector,
  x_in,
  ood_sets,
  settings: EvalSettings,
  key,
  x_heldout=None,
  progress: bool = False,
  anchor_state: Optional[AnchorState] = None,
) -> Tuple[Dict, Dict[str, Dict[str, np.ndarray]]]:
  """(table, figure scores) of a fitted detector holding the MMD test (and optionally a conformal
  state); the sets went through the detector's preprocessing already and are checked here.
  progress: a progress bar on stderr while the sets are scored; anchor_state: the post-hoc
  baselines on the detector's trained encoder (`inflow_jax.evaluation.anchors`)."""
  check_inputs(x_in, ood_sets, settings, x_heldout)
  x_in = np.asarray(x_in, np.float32)
  ood_sets = {k: np.asarray(v, np.float32) for k, v in ood_sets.items()}
  context = evaluation_context(
    detector, x_in, ood_sets, settings, key, x_heldout, progress, anchor_state
  )
  state = detector.mmd_state_
  table = {
    "settings": {
      "batch_size": int(settings.batch_size),
      "level": float(detector.level),
      "n_permutations": int(state.n_permutations),
      "n_reference": int(state.n_reference),
      "protocols": list(settings.protocols),
      "seed": int(settings.seed),
    }
  }
  if context.typicality is not None:
    table["settings"]["typicality_entropy_bpd"] = context.typicality.entropy
    table["settings"]["n_heldout"] = int(x_heldout.shape[0])
  if context.image is not None:
    conformal = detector.conformal_state_
    table["settings"].update(
      conformal=conformal.batch_test,
      combination=detector.combination,
      n_calibration=conformal.n_calibration,
      mean_shift_components=None
      if conformal.mean_shift is None
      else conformal.mean_shift.n_components,
    )
  table["in_distribution"] = batch_row(context.in_scores)
  table["ood"] = {name: batch_row(s) for name, s in context.out_scores.items()}
  figures: Dict[str, Dict[str, np.ndarray]] = {}
  for name in settings.evaluators(context.image is not None, context.anchors is not None):
    EVALUATORS[name](context, table, figures)
  return table, figures


def ood_table(
  model,
  variables,
  mmd_state,
  x_in,
  ood_sets: Mapping[str, np.ndarray],
  *,
  key: jax.Array,
  conformal_state=None,
  combination: str = "bonferroni",
  x_heldout: Optional[np.ndarray] = None,
  **settings,
) -> Tuple[Dict, Dict[str, Dict[str, np.ndarray]]]:
  """(table, figure scores) of a flow and fitted tests: `detector_table` of the detector around
  them (`InFlowDetector.from_states`). settings: `EvalSettings`' fields (batch_size, protocols,
  baselines, mixed_rhos, mixed_batch_sizes, mixed_n_batches, n_bootstrap, seed); conformal_state,
  combination: the conformal attention (calibrated on images in none of these sets) and the rule
  combining it with the MMD test: adds the per-image rows and the 'conformal' and 'combined' gates
  of the mixed protocol."""
  settings = EvalSettings(**settings)
  detector = InFlowDetector.from_states(
    model, variables, mmd_state, conformal_state, combination=combination
  )
  return detector_table(detector, x_in, ood_sets, settings, key, x_heldout)
