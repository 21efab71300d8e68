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
import pathlib
import time
from typing import Any, Dict, Optional

import jax
import ml_collections
import numpy as np
from absl import logging

from configs import default as default_config
from inflow_jax import data, torch_checkpoint, training
from inflow_jax.adversarial import classifier as classifier_lib
from inflow_jax.adversarial.evaluation import (check_attack_config, evaluate_adversarial,
                                               set_name_prefix)
from inflow_jax.attention.encoder import load_reference_encoder, make_encoder
from inflow_jax.attention.mmd import MMDState, fit_mmd
from inflow_jax.evaluation.protocols import evaluate_ood
from inflow_jax.model import InFlow
from inflow_jax.report.tables import format_adversarial_report, format_table
from inflow_jax.report.write import write_report
from inflow_jax.training.flow import check_train_config

MODES = ("train", "evaluate", "all")


def schema() -> ml_collections.ConfigDict:
  """configs/default.py's config: no config may have a key it lacks (values may differ)."""
  return default_config.get_config()


def check_config_keys(config: ml_collections.ConfigDict, reference: ml_collections.ConfigDict,
                      prefix: str = "config") -> None:
  """Raises KeyError naming the first key of `config` that the schema does not have."""
  for key in config.keys():
    where = f"{prefix}.{key}"
    if key not in reference:
      raise KeyError(f"{where} is not a config key; known keys of {prefix}: {sorted(reference.keys())}")
    if isinstance(config[key], ml_collections.ConfigDict):
      if not isinstance(reference[key], ml_collections.ConfigDict):
        raise KeyError(f"{where} must be a value, not a group")
      check_config_keys(config[key], reference[key], where)


def check_config(config: ml_collections.ConfigDict, mode: str) -> None:
  """Every check that needs no data: keys, mode, train settings against the device count."""
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  check_config_keys(config, schema())
  if config.checkpoint_path is not None and mode == "train":
    raise ValueError(f"config.checkpoint_path={config.checkpoint_path!r} is a pretrained model: there is "
                     "nothing to train; use --mode=evaluate")
  if mode != "evaluate" and config.checkpoint_path is None:
    check_train_config(config.train, jax.device_count(), jax.process_count())
  if mode != "train":
    if config.attention.n_reference < 2:
      raise ValueError(f"attention.n_reference must be >= 2, got {config.attention.n_reference}")
    if not config.data.ood:
      raise ValueError("data.ood is empty: give at least one OOD dataset")
    if config.adversarial.enabled:
      check_attack_config(config.adversarial.attack, tuple(config.data.ood))
      if attacks_classifier(config):   # trained on this process's devices (the evaluation's)
        classifier_lib.check_classifier_train_config(config.adversarial.train, jax.local_device_count(),
                                                     prefix="adversarial.train")


def attacks_classifier(config: ml_collections.ConfigDict) -> bool:
  """Whether the job trains and attacks the classifier (adversarial.enabled, epsilons given)."""
  return bool(config.adversarial.enabled and config.adversarial.attack.epsilons)


def checked_labels(config: ml_collections.ConfigDict, key: str, labels, n: int) -> np.ndarray:
  """The labels of the images of `config.data.<key>`, checked for the adversarial classifier."""
  name, split = config.data[key], config.data[f"{key}_split"]
  if labels is None:
    raise ValueError(f"adversarial.enabled: the classifier needs labels, but data.{key}={name!r} split "
                     f"{split!r} has none (adversarial.attack.epsilons=() runs only the adaptive "
                     "attacks, which need none)")
  return classifier_lib.check_labels(labels, n, config.adversarial.model.num_classes,
                                     name=f"the labels of data.{key}={name!r} split {split!r}",
                                     classes_name="adversarial.model.num_classes")


def load_data(config: ml_collections.ConfigDict, mode: str) -> Dict[str, Any]:
  """Every image set the job needs, as float32 NHWC in [0, 1], loaded before anything runs; and under
  "labels" the train/test labels when the adversarial classifier needs them."""
  d = config.data
  load = lambda name, split, limit=None: data.load_images(name, split, d.image_size, d.data_dir, limit)
  sets = {}
  sets["train"], y_train = load(d.train, d.train_split)
  if mode != "train":
    sets["test"], y_test = load(d.test, d.test_split, d.max_eval_images)
    sets["heldout"] = load(d.train, d.heldout_split)[0] if d.heldout_split else None
    sets["ood"] = {name: load(name, d.ood_split, d.max_eval_images)[0] for name in d.ood}
    if config.attention.n_reference > len(sets["train"]):
      raise ValueError(f"attention.n_reference={config.attention.n_reference} exceeds the "
                       f"{len(sets['train'])} images of {d.train!r} {d.train_split!r}")
    if attacks_classifier(config):
      sets["labels"] = {"train": checked_labels(config, "train", y_train, len(sets["train"])),
                        "test": checked_labels(config, "test", y_test, len(sets["test"]))}
      if config.adversarial.train.batch_size > len(sets["train"]):
        raise ValueError(f"adversarial.train.batch_size={config.adversarial.train.batch_size} exceeds "
                         f"the {len(sets['train'])} images of {d.train!r} {d.train_split!r}")
  return sets


def load_model(config: ml_collections.ConfigDict):
  """(model, pretrained variables or None). Reading the pretrained checkpoint fails here, early."""
  if config.checkpoint_path is None:
    return InFlow(**config.model), None
  try:
    return torch_checkpoint.load_reference_checkpoint(config.checkpoint_path, config.model.paper_compat)
  except (OSError, ValueError, KeyError) as error:
    raise ValueError(f"config.checkpoint_path={config.checkpoint_path!r} is unreadable: {error}") from error


def reference_images(x_train: np.ndarray, n: int, seed: int) -> np.ndarray:
  """n training images drawn without replacement (seeded): the attention's reference set."""
  return x_train[np.sort(np.random.default_rng([seed, 1]).permutation(len(x_train))[:n])]


def fit_attention(config: ml_collections.ConfigDict, x_train: np.ndarray) -> MMDState:
  """The attention's MMD test on `attention.n_reference` training images (`reference_images`)."""
  settings = config.attention
  embed = (load_reference_encoder(settings.encoder_path) if settings.encoder_path
           else make_encoder(settings.encoder_seed))
  return fit_mmd(reference_images(x_train, settings.n_reference, config.seed), embed,
                 settings.n_permutations, settings.level, settings.sigma)


def evaluate(model, variables, sets, config, workdir, timings: Dict[str, float]) -> Dict[str, Any]:
  """Fits the attention and runs `evaluate_ood` (figures go to workdir), then, with
  config.adversarial.enabled, `evaluate_adversarial` (its table under "adversarial"). Stage seconds
  go to `timings`. Key streams: PRNGKey(seed) for the evaluation, fold_in(it, 1) for the attacks."""
  tick = time.perf_counter()
  mmd_state = fit_attention(config, sets["train"])
  e = config.eval
  key = jax.random.PRNGKey(config.seed)
  table = evaluate_ood(
      model, variables, mmd_state, sets["test"], sets["ood"], key=key,
      batch_size=e.batch_size, protocols=tuple(e.protocols), baselines=e.baselines,
      x_heldout=sets["heldout"], mixed_rhos=tuple(e.mixed_rhos),
      mixed_batch_sizes=tuple(e.mixed_batch_sizes), mixed_n_batches=e.mixed_n_batches,
      n_bootstrap=e.n_bootstrap, seed=config.seed, plot_dir=str(workdir))
  timings["evaluate"] = time.perf_counter() - tick
  if config.adversarial.enabled:
    tick, labels = time.perf_counter(), sets.get("labels", {})   # labels only when the classifier runs
    table["adversarial"] = evaluate_adversarial(
        config, model=model, variables=variables, mmd_state=mmd_state, x_test=sets["test"],
        ood_sets=sets["ood"], x_heldout=sets["heldout"], key=jax.random.fold_in(key, 1),
        x_train=sets["train"], y_train=labels.get("train"), y_test=labels.get("test"),
        in_name=set_name_prefix(config.data.test))
    timings["adversarial"] = time.perf_counter() - tick
  return table


def initialize_distributed(config: ml_collections.ConfigDict) -> None:
  """`jax.distributed.initialize` when config.train.distributed (before any other JAX call)."""
  c = config.train
  if c.distributed:
    jax.distributed.initialize(c.coordinator_address, c.num_processes, c.process_id)
    logging.info("process %d of %d, %d devices in all", jax.process_index(), jax.process_count(),
                 jax.device_count())


def run_job(config: ml_collections.ConfigDict, workdir, mode: str = "all", *,
            progress: bool = True) -> Optional[Dict[str, Any]]:
  """The whole job (see the module docstring); returns the evaluation table (None for mode=train)."""
  timings, start = {}, time.perf_counter()
  check_config(config, mode)
  workdir = pathlib.Path(workdir)
  model, variables = load_model(config)
  sets = load_data(config, mode)
  timings["load"] = time.perf_counter() - start

  if variables is None and mode != "evaluate":
    tick = time.perf_counter()
    variables = training.train(model, sets["train"], config, workdir, progress=progress).variables
    timings["train"] = time.perf_counter() - tick
  if mode == "train":
    return None
  if variables is None:
    variables, step = training.restore_variables(model, config, workdir,
                                                  sets["train"][:config.train.batch_size])
    logging.info("evaluating the checkpoint of step %d", step)
  if jax.process_index() != 0:
    return None   # the evaluation is single-process; process 0 writes the report
  table = evaluate(model, training.host_copy(variables), sets, config, workdir, timings)
  timings["total"] = time.perf_counter() - start
  paths = write_report(workdir, config, table, timings)
  print(format_table(table))
  if "adversarial" in table:
    print("\nAdversarial sets:\n" + format_adversarial_report(table["adversarial"]))
  print(f"\nreport: {paths['markdown']}, {paths['json']}; total {timings['total']:.0f} s")
  return table
