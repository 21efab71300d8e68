"""The InFlow job: train (or resume, or load a pretrained checkpoint), fit the attention, evaluate.

`run_job(config, workdir, mode)` is what `run.py` calls (google/flax examples' `train_and_evaluate`):

  python run.py --config configs/digits.py --workdir /tmp/inflow_digits
  python run.py --config configs/default.py --workdir DIR --config.train.num_steps=100
  python run.py --config configs/cifar10_pretrained.py --workdir DIR --config.checkpoint_path=PATH

Modes: `train` (train or resume up to config.train.num_steps), `evaluate` (restore the newest
checkpoint, or the pretrained one, and write the report), `all` (both). With
`config.adversarial.enabled` the evaluation adds the adversarial sets (`evaluate_adversarial`: a
classifier trained on data.train, PGD against it, adaptive attacks on the detector). Every input
(config keys, dataset names, labels, batch sizes vs devices, attack settings, checkpoints) is checked
before any training starts. The workdir holds `checkpoints/`, `metrics.jsonl`, `report.json`,
`report.md` and the PNG figures.
"""

import contextlib
import pathlib
import time
from typing import Any, Dict, Optional, Tuple

import jax
import ml_collections
import numpy as np
from absl import logging

from inflow_jax import data, training
from inflow_jax.adversarial import classifier as classifier_lib
from inflow_jax.adversarial.evaluation import evaluate_adversarial
from inflow_jax.adversarial.names import set_name_prefix
from inflow_jax.app import workdir as workdir_lib
from inflow_jax.app.config_checks import (
  attacks_classifier,
  check_config,
  density_components,
  mean_shift_components,
)
from inflow_jax.app.score import save_job_detector
from inflow_jax.data.jpeg import jpeg_round_trip
from inflow_jax.detector import InFlowDetector
from inflow_jax.evaluation.protocols import ood_table
from inflow_jax.gates import ConformalState, check_calibration, fit_conformal
from inflow_jax.gates.conformal import check_density_size, check_disjoint
from inflow_jax.gates.encoder import load_reference_encoder, make_encoder
from inflow_jax.gates.mmd import MMDState, fit_mmd
from inflow_jax.model import InFlow, torch_checkpoint
from inflow_jax.model.flow_file import is_flow_file, load_flow_file
from inflow_jax.report import plots
from inflow_jax.report.tables import format_adversarial_report, format_table
from inflow_jax.report.write import write_report
from inflow_jax.training import checkpoint as checkpoint_lib
from inflow_jax.training.flow import CHECKPOINT_DIR
from inflow_jax.utils import stored_config


def check_resume(
  config: ml_collections.ConfigDict, workdir: pathlib.Path, mode: str, force_resume: bool
) -> Optional[int]:
  """The newest checkpoint step in workdir (None: none). Training on from it must not change the
  stored training settings (unless force_resume) nor ask for fewer steps than it holds."""
  step = checkpoint_lib.latest_step(workdir / CHECKPOINT_DIR)
  if step is None or mode == "evaluate" or config.checkpoint_path is not None:
    return step
  stored, current = stored_config.read_config(workdir), config.to_dict()
  changed = lambda keys: (
    [] if stored is None else stored_config.changed_training_keys(stored, current, keys)
  )
  values = lambda k: (stored_config.flat_value(stored, k), stored_config.flat_value(current, k))
  training = changed(stored_config.TRAINING_KEYS)
  if training and not force_resume:
    raise ValueError(
      f"the workdir {workdir} holds checkpoints of another config: "
      + ", ".join("{} (stored {!r}, now {!r})".format(k, *values(k)) for k in training)
      + " differ; rerun with the stored settings, pass --force_resume, or use another --workdir"
    )
  # more steps at a constant rate continue the same run: no warning for num_steps alone then
  rescheduled = [
    k
    for k in changed(stored_config.SCHEDULE_KEYS)
    if k != "train.num_steps" or config.train.schedule != "constant"
  ]
  if rescheduled:
    logging.warning(
      "resuming from step %d with other optimiser settings than the stored ones: %s; "
      "the steps after it follow the new values",
      step,
      ", ".join("{} {!r} -> {!r}".format(k, *values(k)) for k in rescheduled),
    )
  if config.train.num_steps < step:
    raise ValueError(
      f"train.num_steps={config.train.num_steps} is below step {step} of the newest "
      f"checkpoint in {workdir / CHECKPOINT_DIR}; ask for at least {step} steps (or "
      "--mode=evaluate to evaluate it)"
    )
  return step


def checked_labels(config: ml_collections.ConfigDict, key: str, labels, n: int) -> np.ndarray:
  """The labels of the images of `config.data.<key>`, checked for the adversarial classifier."""
  name, split = config.data[key], config.data[f"{key}_split"]
  if labels is None:
    raise ValueError(
      f"adversarial.enabled: the classifier needs labels, but data.{key}={name!r} split "
      f"{split!r} has none (adversarial.attack.epsilons=() runs only the adaptive "
      "attacks, which need none)"
    )
  return classifier_lib.check_labels(
    labels,
    n,
    config.adversarial.model.num_classes,
    name=f"the labels of data.{key}={name!r} split {split!r}",
    classes_name="adversarial.model.num_classes",
  )


def load_data(config: ml_collections.ConfigDict, mode: str) -> Dict[str, Any]:
  """Every image set the job needs, as float32 NHWC in [0, 1], loaded before anything runs; and under
  "labels" the train/test labels when the adversarial classifier needs them."""
  d = config.data
  load = lambda name, split, limit=None: data.load_images(
    name, split, d.image_size, d.data_dir, limit
  )
  images, y_train = data.load_split(d.train, d.train_split, d.data_dir)
  sets = {
    "train_shape": images.shape[1:],  # native H, W, C (the score mode's inputs must match)
    "train": data.preprocess(images, d.image_size, data.default_center_crop(d.train)),
  }
  t = config.train
  if t.eval_every and mode != "evaluate" and config.checkpoint_path is None:
    name, split = t.eval_data or d.train, t.eval_split or d.heldout_split
    if split is None:
      raise ValueError(
        "train.eval_every > 0 needs held-out images: set train.eval_split (or data.heldout_split)"
      )
    try:
      sets["eval"] = load(name, split, t.eval_max_images)[0]
    except ValueError as error:
      raise ValueError(f"train.eval_data={name!r} train.eval_split={split!r}: {error}") from error
  if mode != "train":
    sets["test"], y_test = load(d.test, d.test_split, d.max_eval_images)
    sets["heldout"] = load(d.train, d.heldout_split)[0] if d.heldout_split else None
    sets["ood"] = {name: load(name, d.ood_split, d.max_eval_images)[0] for name in d.ood}
    if d.calibration_split:
      sets["calibration"] = load(d.test, d.calibration_split)[0]
    if d.get("density_split"):
      sets["density"] = load(d.test, d.density_split)[0]
    elif config.attention.get("n_density"):
      if config.attention.n_density > len(sets["train"]):
        raise ValueError(
          f"attention.n_density={config.attention.n_density} exceeds the "
          f"{len(sets['train'])} images of {d.train!r} {d.train_split!r}"
        )
      sets["density"] = reference_images(sets["train"], config.attention.n_density, config.seed)
    check_set_sizes(config, sets)
    if attacks_classifier(config):
      sets["labels"] = {
        "train": checked_labels(config, "train", y_train, len(sets["train"])),
        "test": checked_labels(config, "test", y_test, len(sets["test"])),
      }
      if config.adversarial.train.batch_size > len(sets["train"]):
        raise ValueError(
          f"adversarial.train.batch_size={config.adversarial.train.batch_size} exceeds "
          f"the {len(sets['train'])} images of {d.train!r} {d.train_split!r}"
        )
  return jpeg_sets(sets, d.jpeg_quality)


def jpeg_sets(sets: Dict[str, Any], quality) -> Dict[str, Any]:
  """Every image set of `load_data` through the JPEG round trip (data.jpeg_quality; None: as is)."""
  if quality is None:
    return sets
  convert = lambda x: None if x is None else jpeg_round_trip(x, quality)
  return {
    k: (
      v
      if k in ("train_shape", "labels")
      else {name: convert(x) for name, x in v.items()}
      if k == "ood"
      else convert(v)
    )
    for k, v in sets.items()
  }


def check_set_sizes(config: ml_collections.ConfigDict, sets: Dict[str, Any]) -> None:
  """The loaded sets against the attention and evaluation settings (before any training)."""
  d, e = config.data, config.eval
  if config.attention.n_reference > len(sets["train"]):
    raise ValueError(
      f"attention.n_reference={config.attention.n_reference} exceeds the "
      f"{len(sets['train'])} images of {d.train!r} {d.train_split!r}"
    )
  sizes = {f"data.test={d.test!r} {d.test_split!r}": len(sets["test"])}
  sizes.update({f"data.ood {name!r} {d.ood_split!r}": len(x) for name, x in sets["ood"].items()})
  for name, n in sizes.items():
    if n < e.batch_size:
      raise ValueError(
        f"{name} holds {n} images (after data.max_eval_images), fewer than "
        f"eval.batch_size={e.batch_size}"
      )
  if "mixed" in e.protocols and max(e.mixed_batch_sizes) > len(sets["test"]):
    raise ValueError(
      f"eval.mixed_batch_sizes up to {max(e.mixed_batch_sizes)} exceed the "
      f"{len(sets['test'])} test images"
    )
  if "calibration" in sets and config.attention.kind != "mmd":
    check_calibration(
      sets["calibration"],
      config.attention.level,
      {
        f"the training images (data.train {d.train_split!r})": sets["train"],
        f"the test images (data.test {d.test_split!r})": sets["test"],
        f"the density images (data.density_split {d.get('density_split')!r})": sets.get("density")
        if d.get("density_split")
        else None,
      },
    )  # n_density: training images
  if d.get("density_split"):
    what = f"images of data.density_split={d.density_split!r}"
    check_density_size(len(sets["density"]), density_components(config), what)
    check_disjoint(
      sets["density"],
      what,
      {f"the test images (data.test {d.test_split!r})": sets["test"]},
      "the density would be fitted on what it is evaluated on; use a disjoint split",
    )
  if (e.baselines or "mixed" in e.protocols) and (
    sets["heldout"] is None or not len(sets["heldout"])
  ):
    raise ValueError(
      "the typicality test (eval.baselines or the mixed protocol) needs held-out "
      f"images: data.heldout_split={d.heldout_split!r} gives none"
    )


def load_model(config: ml_collections.ConfigDict):
  """(model, pretrained variables or None). Reading the pretrained checkpoint fails here, early: an
  original (PyTorch-named) state dict, or a flow file (`inflow_jax.model.flow_file`: .npz + .json)."""
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


def reference_images(x_train: np.ndarray, n: int, seed: int) -> np.ndarray:
  """n training images drawn without replacement (seeded): the attention's reference set."""
  return x_train[np.sort(np.random.default_rng([seed, 1]).permutation(len(x_train))[:n])]


def make_embed(config: ml_collections.ConfigDict):
  """The attention's encoder: the original's weights (attention.encoder_path) or a seeded one."""
  settings = config.attention
  return (
    load_reference_encoder(settings.encoder_path)
    if settings.encoder_path
    else make_encoder(settings.encoder_seed)
  )


def fit_attention(config: ml_collections.ConfigDict, x_train: np.ndarray) -> MMDState:
  """The attention's MMD test on `attention.n_reference` training images (`reference_images`)."""
  settings = config.attention
  return fit_mmd(
    reference_images(x_train, settings.n_reference, config.seed),
    make_embed(config),
    settings.n_permutations,
    settings.level,
    settings.sigma,
  )


def fit_conformal_attention(config, model, variables, sets) -> Optional[ConformalState]:
  """attention.kind 'conformal' / 'combined': the density fitted on the reference images (or on
  attention.n_density training images, or on data.density_split), calibrated on
  data.calibration_split (checked disjoint from the training, test and density images); else None."""
  a = config.attention
  if a.kind == "mmd":
    return None
  # (the calibration images were checked disjoint from the training and test images at loading)
  return fit_conformal(
    model,
    variables,
    reference_images(sets["train"], a.n_reference, config.seed),
    sets["calibration"],
    level=a.level,
    batch_test=a.batch_test,
    n_components=density_components(config),
    seed=config.seed,
    x_density=sets.get("density"),
    mean_shift_components=mean_shift_components(config) if a.kind == "combined" else None,
  )


def save_detector(
  config, model, variables, mmd_state: MMDState, conformal_state, sets, workdir
) -> None:
  """`<workdir>/detector/`: the flow, the evaluation's attention (attention.kind) and, for 'mmd', a
  threshold at 5% false positives on the held-out in-distribution images (data.heldout_split; without
  it, the reference); the detector applies data.jpeg_quality to what it scores."""
  a = config.attention
  x_ref = reference_images(sets["train"], a.n_reference, config.seed)
  detector = InFlowDetector(
    model,
    variables,
    encoder=mmd_state.embed,
    attention=a.kind,
    n_permutations=mmd_state.n_permutations,
    level=mmd_state.level,
    batch_size=config.eval.batch_size,
    batch_test=a.batch_test,
    combination=a.combination,
    n_components=density_components(config),
    mean_shift_components=mean_shift_components(config),
    jpeg_quality=config.data.jpeg_quality,
    seed=config.seed,
  )
  detector.fit(
    x_ref,
    x_threshold=sets["heldout"],
    mmd_state=mmd_state,
    conformal_state=conformal_state,
    preprocessed=True,
  )  # the sets went through data.jpeg_quality at loading
  save_job_detector(workdir, detector, sets["train_shape"])


def evaluate(
  model, variables, sets, config, timings: Dict[str, float]
) -> Tuple[Dict, Dict, MMDState, Optional[ConformalState]]:
  """(table, the scores its figures plot, the attention test): fits the attention and runs `evaluate_ood`, then, with
  config.adversarial.enabled, `evaluate_adversarial` (its table under "adversarial"). Stage seconds
  go to `timings`. Key streams: PRNGKey(seed) for the evaluation, fold_in(it, 1) for the attacks."""
  tick = time.perf_counter()
  mmd_state = fit_attention(config, sets["train"])
  conformal_state = fit_conformal_attention(config, model, variables, sets)
  timings["fit_attention"] = time.perf_counter() - tick
  e = config.eval
  key = jax.random.PRNGKey(config.seed)
  table, figure_scores = ood_table(
    model,
    variables,
    mmd_state,
    sets["test"],
    sets["ood"],
    key=key,
    batch_size=e.batch_size,
    protocols=tuple(e.protocols),
    baselines=e.baselines,
    x_heldout=sets["heldout"],
    mixed_rhos=tuple(e.mixed_rhos),
    mixed_batch_sizes=tuple(e.mixed_batch_sizes),
    mixed_n_batches=e.mixed_n_batches,
    n_bootstrap=e.n_bootstrap,
    seed=config.seed,
    conformal_state=conformal_state,
    combination=config.attention.combination,
  )
  table["settings"].update(attention=config.attention.kind, jpeg_quality=config.data.jpeg_quality)
  timings["evaluate"] = time.perf_counter() - tick
  if config.adversarial.enabled:
    tick, labels = (
      time.perf_counter(),
      sets.get("labels", {}),
    )  # labels only when the classifier runs
    table["adversarial"] = evaluate_adversarial(
      config,
      model=model,
      variables=variables,
      mmd_state=mmd_state,
      x_test=sets["test"],
      ood_sets=sets["ood"],
      x_heldout=sets["heldout"],
      key=jax.random.fold_in(key, 1),
      x_train=sets["train"],
      y_train=labels.get("train"),
      y_test=labels.get("test"),
      in_name=set_name_prefix(config.data.test),
      conformal_state=conformal_state,
      combination=config.attention.combination,
    )
    timings["adversarial"] = time.perf_counter() - tick
  return table, figure_scores, mmd_state, conformal_state


def initialize_distributed(config: ml_collections.ConfigDict) -> None:
  """`jax.distributed.initialize` when config.train.distributed (before any other JAX call)."""
  c = config.train
  if c.distributed:
    jax.distributed.initialize(c.coordinator_address, c.num_processes, c.process_id)
    logging.info(
      "process %d of %d, %d devices in all",
      jax.process_index(),
      jax.process_count(),
      jax.device_count(),
    )


def run_job(
  config: ml_collections.ConfigDict,
  workdir,
  mode: str = "all",
  *,
  progress: bool = True,
  force_resume: bool = False,
) -> Optional[Dict[str, Any]]:
  """The whole job (see the module docstring); returns the evaluation table (None for mode=train).

  Every check comes first: the config (`check_config`), a writable workdir, its lock (a second run on
  the same workdir fails at once), the stored config against this one (`check_resume`; force_resume
  skips the comparison), the pretrained checkpoint and every data set.
  """
  timings, start = {}, time.perf_counter()
  check_config(config, mode)
  workdir = pathlib.Path(workdir)
  is_main = jax.process_index() == 0
  if is_main:
    workdir_lib.probe_writable(workdir)
  with workdir_lib.WorkdirLock(workdir) if is_main else contextlib.nullcontext():
    stored_step = check_resume(config, workdir, mode, force_resume)
    model, variables = load_model(config)
    sets = load_data(config, mode)
    timings["load"] = time.perf_counter() - start
    return _train_and_evaluate(
      config, workdir, mode, model, variables, sets, stored_step, timings, start, progress
    )


def _train_and_evaluate(
  config, workdir, mode, model, variables, sets, stored_step, timings, start, progress
) -> Optional[Dict[str, Any]]:
  """run_job after its checks: train (or resume), restore or take the pretrained weights, evaluate,
  write the report (the table before the figures)."""
  is_main = jax.process_index() == 0
  step = None
  if variables is None and mode != "evaluate":
    if is_main and stored_step is None:
      stored_config.write_config(workdir, config.to_dict())  # stored with the first checkpoint
    tick = time.perf_counter()
    variables = training.train(
      model, sets["train"], config, workdir, x_eval=sets.get("eval"), progress=progress
    ).variables
    timings["train"] = time.perf_counter() - tick
    step = config.train.num_steps
  if mode == "train":
    return None
  if variables is None:
    variables, step = training.restore_variables(
      model, config, workdir, sets["train"][: config.train.batch_size]
    )
    logging.info("evaluating the checkpoint of step %d", step)
  if not is_main:
    return None  # the evaluation is single-process; process 0 writes the report
  variables = training.host_copy(variables)
  table, figure_scores, mmd_state, conformal_state = evaluate(
    model, variables, sets, config, timings
  )
  if stored_config.read_config(workdir) is None:  # training stores it with its first checkpoint
    stored_config.write_config(workdir, config.to_dict())
  save_detector(config, model, variables, mmd_state, conformal_state, sets, workdir)
  timings["total"] = time.perf_counter() - start
  write_report(workdir, config, table, timings, checkpoint_step=step, with_figures=False)
  table["figures"] = plots.plot_all(table, figure_scores, str(workdir))
  paths = write_report(workdir, config, table, timings, checkpoint_step=step)
  print(format_table(table))
  if "adversarial" in table:
    print("\nAdversarial sets:\n" + format_adversarial_report(table["adversarial"]))
  print(f"\nreport: {paths['markdown']}, {paths['json']}; total {timings['total']:.0f} s")
  return table
