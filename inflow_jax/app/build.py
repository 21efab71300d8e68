"""The flow and the detector a config describes.

`load_model(config)`: `InFlow(**config.model)`, or a pretrained flow (config.checkpoint_path).
`fitted_detector(config, model, variables, sets)`: the `InFlowDetector` of config.attention, fitted
on the job's sets: the MMD test on the reference images (its encoder: the original's weights,
attention.encoder_path, or a seeded one; the trained encoder's features with attention.encoder
'trained'; bandwidth attention.sigma), the conformal gate on
data.calibration_split (the density on attention.n_density training images or data.density_split)
and, for the paper's gate, the threshold on the held-out images (data.heldout_split); with
config.encoder.enabled, the trained in-distribution encoder (`trained_encoder`) whose feature flow,
fitted on the training images' features, joins the per-image density.
"""

import jax
import ml_collections

from inflow_jax.app.config_checks import density_components, mean_shift_components
from inflow_jax.detector import InFlowDetector
from inflow_jax.detector.fitting import mmd_reference
from inflow_jax.gates import fit_mmd
from inflow_jax.gates.encoder import load_reference_encoder, make_encoder
from inflow_jax.model import ClassifierEncoder, InFlow, TrainedEncoder, torch_checkpoint
from inflow_jax.model.flow_file import is_flow_file, load_flow_file
from inflow_jax.training.encoder import accuracy, train_encoder


def load_model(config: ml_collections.ConfigDict):
  """(model, pretrained variables or None). Reading the pretrained checkpoint fails here, early: an
  original (PyTorch-named) state dict, or a flow file (`inflow_jax.model.flow_file`: .npz +
  .json)."""
  if config.checkpoint_path is None:
    return InFlow(**config.model), None
  if is_flow_file(config.checkpoint_path):
    model, variables = load_flow_file(config.checkpoint_path)
    return model, jax.tree.map(jax.numpy.asarray, variables)
  try:
    return torch_checkpoint.load_reference_checkpoint(
      config.checkpoint_path, config.model.paper_compat
    )
  except (OSError, ValueError, KeyError) as error:
    raise ValueError(
      f"config.checkpoint_path={config.checkpoint_path!r} is unreadable: {error}"
    ) from error


def make_embed(config: ml_collections.ConfigDict):
  """The attention's encoder: the original's weights (attention.encoder_path) or a seeded one."""
  settings = config.attention
  if settings.encoder_path:
    return load_reference_encoder(settings.encoder_path)
  return make_encoder(settings.encoder_seed)


def trained_encoder(
  config: ml_collections.ConfigDict, workdir, sets, progress: bool = True, devices=None
):
  """(TrainedEncoder or None, a summary for the report): the in-distribution encoder of
  config.encoder trained (or resumed, or restored) on the training images, with their labels when
  data.train has them, else on rotation prediction alone; data-parallel over `devices` (None:
  every process's, as the flow trains)."""
  c = config.encoder
  if not c.enabled:
    return None, None
  labels = sets["encoder_labels"]
  num_classes = c.model.num_classes if labels["train"] is not None else 0
  model = ClassifierEncoder(**{**c.model.to_dict(), "num_classes": num_classes})
  result = train_encoder(
    model, sets["train"], labels["train"], config, workdir, devices=devices, progress=progress
  )
  summary = {
    "steps": int(c.train.num_steps),
    "labels": num_classes > 0,
    "rotations": num_classes == 0 or c.rotation_fraction > 0,
    "mmd_encoder": config.attention.encoder,
  }
  if num_classes and labels["test"] is not None and "test" in sets:
    summary["test_accuracy"] = accuracy(model, result.variables, sets["test"], labels["test"])
  return TrainedEncoder(model, result.variables), summary


def fitted_detector(
  config: ml_collections.ConfigDict, model, variables, sets, encoder=None
) -> InFlowDetector:
  """The config's detector, fitted on the job's preprocessed sets (`inflow_jax.app.datasets`). Every
  kind keeps the MMD test (the paper protocols evaluate it); the sets were checked at loading."""
  a = config.attention
  detector = InFlowDetector(
    model,
    variables,
    encoder=make_embed(config),
    attention=a.kind,
    n_permutations=a.n_permutations,
    level=a.level,
    batch_size=config.eval.batch_size,
    batch_test=a.batch_test,
    combination=a.combination,
    n_components=density_components(config),
    mean_shift_components=mean_shift_components(config),
    jpeg_quality=config.data.jpeg_quality,
    seed=config.seed,
    trained_encoder=encoder,
    semantic_score=config.encoder.semantic_score,
    mmd_encoder=a.encoder,
    semantic_flip_average=config.encoder.flip_average,
  )
  reference = mmd_reference(detector, sets["reference"], sets.get("calibration"))
  mmd_state = fit_mmd(reference, detector.mmd_embedder, a.n_permutations, a.level, a.sigma)
  uses_conformal = detector.uses_conformal
  return detector.fit(
    sets["reference"],
    x_calibration=sets["calibration"] if uses_conformal else None,
    x_threshold=sets["heldout"],
    x_density=sets.get("density") if uses_conformal else None,
    x_features=sets["train"] if encoder is not None else None,  # the encoder's training images
    mmd_state=mmd_state,
    preprocessed=True,  # the sets went through data.jpeg_quality at loading
  )
