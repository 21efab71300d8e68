"""Saving and loading an `InFlowDetector`: <dir>/config.json and <dir>/arrays (orbax), plus a
SHA-256 manifest (`inflow_jax.utils.integrity`).

config.json: the model's constructor arguments, the detector's settings (attention kind, level,
JPEG quality, ...), the threshold, the fitted images' shape, the encoder's static fields, the MMD
test's image shape and the conformal state's static fields. arrays: the flow's variables, the
encoder's parameters, the MMD reference statistics ("mmd" and "combined"), the density's arrays and
the calibration scores ("conformal" and "combined"), the mean-shift test's whitening and pool
("combined"), a trained encoder's variables (which the MMD test embeds with when its setting
`mmd_encoder` is "trained"), its semantic scores' arrays (ViM's; the feature
flow's variables) and each view's calibration scores. Detectors saved before the attention
kinds existed load as "mmd"; "combined" ones saved before the mean-shift test load without it
(their gate: the conformal and MMD tests); those saved before the fitted images' shape was stored
check the MMD test's shape only.
"""

import dataclasses
import json
import pathlib
from typing import Any, Dict

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from inflow_jax.gates import ConformalState, MeanShiftState
from inflow_jax.gates.encoder import Embedder
from inflow_jax.gates.features import n_features
from inflow_jax.gates.mmd import MMDState
from inflow_jax.gates.posthoc import ViMState
from inflow_jax.gates.semantic import SemanticState
from inflow_jax.model import FeatureFlow, InFlow
from inflow_jax.model.classifier_encoder import ClassifierEncoder, TrainedEncoder
from inflow_jax.training.feature_flow import FittedFeatureFlow
from inflow_jax.utils import integrity
from inflow_jax.utils.stored_config import tuples_from_json

SETTINGS = (
  "attention",
  "n_permutations",
  "level",
  "batch_size",
  "convention",
  "false_positive_rate",
  "batch_test",
  "combination",
  "n_components",
  "mean_shift_components",
  "jpeg_quality",
  "seed",
  "semantic_score",
  "mmd_encoder",
  "semantic_flip_average",
)
# the layout of config.json and arrays/: 2 added the trained encoder and the feature flow, 3 the
# ViM semantic score, 4 the MMD test on the trained encoder's features (settings' mmd_encoder) and
# semantic_flip_average, 5 the semantic scores pooled into one view (semantic_pooled; earlier
# formats load with each score a view, as they were calibrated); a detector saved by a newer
# version is refused (its arrays may mean something else)
FORMAT_VERSION = 5
VIM_ARRAYS = ("kernel", "bias", "origin", "residual_basis", "alpha")
MEAN_SHIFT_ARRAYS = ("mean", "projection", "pool")
MMD_ARRAYS = (
  "reference",
  "center",
  "sigma",
  "kernel_offset",
  "reference_row_sums",
  "reference_total",
)
ENCODER_FIELDS = ("features", "embedding_dim", "chunk_size", "early_chunk_size", "early_layers")


def model_config(model) -> Dict[str, Any]:
  """The constructor arguments of a flax module (InFlow, ClassifierEncoder, FeatureFlow)."""
  return {
    f.name: getattr(model, f.name)
    for f in dataclasses.fields(model)
    if f.name not in ("parent", "name")
  }


def check_finite_variables(variables, what: str):
  """Raises ValueError naming the first leaf of `variables` holding NaN or infinite values."""
  for path, leaf in jax.tree_util.tree_leaves_with_path(variables):
    array = np.asarray(leaf)
    if np.issubdtype(array.dtype, np.inexact) and not np.all(np.isfinite(array)):
      raise ValueError(
        f"{what} contain NaN or infinite values (in {jax.tree_util.keystr(path)}): "
        "the flow is corrupt (a damaged checkpoint or a diverged training run?)"
      )


def _read_config(path: pathlib.Path) -> Dict[str, Any]:
  """The saved detector's config.json, or a ValueError naming the path when it is not valid JSON."""
  try:
    return json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as error:
    raise ValueError(
      f"{path} is corrupt (not valid JSON: {error}); the saved detector cannot be read"
    ) from error


def _restore_as_numpy(path: pathlib.Path):
  """The arrays saved at `path` as host numpy arrays, whatever the process topology that saved them
  (so several `jax.distributed` processes can each load a detector saved by one)."""
  with ocp.PyTreeCheckpointer() as checkpointer:
    metadata = checkpointer.metadata(path)
    tree = getattr(getattr(metadata, "item_metadata", metadata), "tree", metadata)
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))


def save_detector(detector, directory) -> pathlib.Path:
  """Writes a fitted detector to `directory` (created; must not exist yet)."""
  if not isinstance(detector.encoder, Embedder):
    raise TypeError("only detectors with an inflow_jax.gates.encoder.Embedder encoder can be saved")
  directory = pathlib.Path(directory).resolve()
  if directory.exists():
    raise FileExistsError(f"{directory} exists; save into a new directory")
  arrays = {"variables": detector.variables, "encoder": detector.encoder.params}
  meta = {
    "format_version": FORMAT_VERSION,
    "model": model_config(detector.model),
    "settings": {k: getattr(detector, k) for k in SETTINGS},
    "threshold": detector.threshold_,
    "image_shape": None if detector.image_shape is None else list(detector.image_shape),
    "encoder": {k: getattr(detector.encoder, k) for k in ENCODER_FIELDS},
  }
  if detector.mmd_state_ is not None:
    arrays["mmd"] = {k: getattr(detector.mmd_state_, k) for k in MMD_ARRAYS}
    meta["mmd"] = {"image_shape": list(detector.mmd_state_.image_shape)}
  if detector.trained_encoder is not None:
    arrays["trained_encoder"], meta["trained_encoder"] = _encoder_entry(detector.trained_encoder)
  if detector.conformal_state_ is not None:
    state = detector.conformal_state_
    arrays["conformal"] = {"density": state.density, "calibration_scores": state.calibration_scores}
    if state.semantic is not None:
      arrays["view_calibration"] = state.view_calibration
      _semantic_entries(state.semantic, arrays, meta)
    meta["conformal"] = {"level": state.level, "batch_test": state.batch_test}
    if state.mean_shift is not None:
      arrays["mean_shift"] = {k: getattr(state.mean_shift, k) for k in MEAN_SHIFT_ARRAYS}
      meta["mean_shift"] = {"n_permutations": state.mean_shift.n_permutations}
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory / "arrays", jax.tree.map(jnp.asarray, arrays))
  meta["encoder"]["features"] = list(meta["encoder"]["features"])
  (directory / "config.json").write_text(json.dumps(meta, indent=2))
  integrity.write_manifest(directory)
  return directory


def _semantic_entries(semantic, arrays, meta) -> None:
  """Adds the fitted semantic score's arrays (and the feature flow's module settings)."""
  meta["semantic_scores"] = list(semantic.scores)
  meta["semantic_pooled"] = bool(semantic.pooled)
  if semantic.vim is not None:
    arrays["vim"] = {k: np.asarray(getattr(semantic.vim, k)) for k in VIM_ARRAYS}
  if semantic.feature_flow is not None:
    flow = semantic.feature_flow
    arrays["feature_flow"] = {"variables": flow.variables, "mean": flow.mean, "std": flow.std}
    meta["feature_flow"] = model_config(flow.model)


def _encoder_entry(trained_encoder) -> tuple:
  if not isinstance(trained_encoder.model, ClassifierEncoder):
    raise TypeError(
      "only detectors whose trained encoder is an inflow_jax.model.ClassifierEncoder can be "
      f"saved (got {type(trained_encoder.model).__name__}); save your encoder's weights yourself"
    )
  config = model_config(trained_encoder.model)
  config["widths"] = list(config["widths"])
  return trained_encoder.variables, config


def _semantic_state(meta, arrays, directory):
  """(TrainedEncoder or None, SemanticState or None) of a saved detector, checked against each
  other."""
  if "trained_encoder" not in arrays:
    return None, None
  settings = {k: tuples_from_json(v) for k, v in meta["trained_encoder"].items()}
  encoder = TrainedEncoder(ClassifierEncoder(**settings), arrays["trained_encoder"])
  if "view_calibration" not in arrays:
    return encoder, None
  scores = tuple(meta.get("semantic_scores", ("feature_flow",)))  # format 2: the feature flow
  flip_average = meta["settings"].get("semantic_flip_average", True)  # format <= 3: flipped
  pooled = meta.get("semantic_pooled", False)  # format <= 4: each score a view
  semantic = SemanticState(
    encoder.model, encoder.variables, scores, flip_average=flip_average, pooled=pooled
  )
  num_features = encoder.model.widths[-1]
  if "vim" in arrays:
    vim = ViMState(**{k: np.asarray(arrays["vim"][k]) for k in VIM_ARRAYS})
    _check_feature_size(vim.kernel.shape[0], num_features, "ViM score", directory)
    semantic = semantic._replace(vim=vim._replace(alpha=float(vim.alpha)))
  if "feature_flow" in arrays:
    saved = arrays["feature_flow"]
    _check_feature_size(saved["mean"].shape[0], num_features, "feature flow", directory)
    flow = FittedFeatureFlow(
      FeatureFlow(**{k: tuples_from_json(v) for k, v in meta["feature_flow"].items()}),
      saved["variables"],
      np.asarray(saved["mean"]),
      np.asarray(saved["std"]),
    )
    semantic = semantic._replace(feature_flow=flow)
  return encoder, semantic


def _check_feature_size(saved: int, num_features: int, name: str, directory) -> None:
  if saved != num_features:
    raise ValueError(
      f"{directory}: the saved {name} takes {saved} features, the encoder gives {num_features}: "
      "the detector's files do not belong together"
    )


def _conformal_state(detector, model, meta, arrays, directory, semantic) -> ConformalState:
  """The saved conformal state, checked against this version's per-image features."""
  density = {k: np.asarray(v) for k, v in arrays["conformal"]["density"].items()}
  expected = n_features(model)
  if density["mean"].shape[0] != expected:
    raise ValueError(
      f"{directory}: the saved density takes {density['mean'].shape[0]} features per "
      f"image but this version computes {expected} for this flow "
      "(inflow_jax.gates.features): fit the detector again"
    )
  mean_shift = None
  if "mean_shift" in arrays:
    mean_shift = MeanShiftState(
      **{k: jnp.asarray(arrays["mean_shift"][k]) for k in MEAN_SHIFT_ARRAYS}, **meta["mean_shift"]
    )
  elif detector.attention == "combined":  # saved before the mean-shift test existed
    detector.mean_shift_components = None
  return ConformalState(
    density=density,
    calibration_scores=np.asarray(arrays["conformal"]["calibration_scores"]),
    mean_shift=mean_shift,
    semantic=semantic,
    view_calibration=None if semantic is None else _view_calibration(arrays["view_calibration"]),
    **meta["conformal"],
  )


def _view_calibration(saved) -> Dict[str, np.ndarray]:
  """Each view's sorted calibration scores (format 2's "semantic" entry: the feature flow's)."""
  names = {"semantic": "feature_flow"}
  return {names.get(k, k): np.asarray(v) for k, v in saved.items()}


def load_detector(cls, directory):
  """Reads a detector written by `save_detector` as an instance of `cls`."""
  directory = pathlib.Path(directory).resolve()
  if not (directory / "config.json").is_file() or not (directory / "arrays").is_dir():
    raise FileNotFoundError(
      f"{directory} does not hold a saved InFlowDetector (config.json and arrays/ expected)"
    )
  if integrity.has_manifest(directory):
    reason = integrity.verify_manifest(directory)
    if reason is not None:
      raise ValueError(f"{directory}: the saved detector is corrupt: {reason}")
  meta = _read_config(directory / "config.json")
  version = meta.get("format_version", 1)
  if not isinstance(version, int) or version > FORMAT_VERSION:
    raise ValueError(
      f"{directory} was saved by a newer inflow_jax (detector format {version}; this version "
      f"reads up to {FORMAT_VERSION}): upgrade inflow_jax to load it"
    )
  arrays = _restore_as_numpy(directory / "arrays")
  trained_encoder, semantic = _semantic_state(meta, arrays, directory)
  model = InFlow(**{k: tuples_from_json(v) for k, v in meta["model"].items()})
  fields = {k: meta["encoder"][k] for k in ENCODER_FIELDS if k in meta["encoder"]}
  fields["features"] = tuple(fields["features"])
  encoder = Embedder(params=arrays["encoder"], **fields)
  detector = cls(
    model,
    arrays["variables"],
    encoder=encoder,
    trained_encoder=trained_encoder,
    **meta["settings"],
  )
  if semantic is not None and "semantic_score" not in meta["settings"]:  # saved by format 2
    detector.semantic_score = "feature_flow"
  if "mmd" in arrays:
    detector.mmd_state_ = MMDState(
      embed=detector.mmd_embedder,
      **{k: jnp.asarray(arrays["mmd"][k]) for k in MMD_ARRAYS},
      n_permutations=detector.n_permutations,
      level=detector.level,
      image_shape=tuple(meta["mmd"]["image_shape"]),
    )
  if "conformal" in arrays:
    detector.conformal_state_ = _conformal_state(detector, model, meta, arrays, directory, semantic)
  detector.threshold_ = meta["threshold"]
  if meta.get("image_shape") is not None:  # absent in detectors saved before it was
    detector.image_shape_ = tuple(meta["image_shape"])
  return detector
