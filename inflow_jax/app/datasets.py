"""Every image set the job needs, loaded, checked and preprocessed before any work starts.

`load_data(config, mode)` returns float32 NHWC sets in [0, 1] under the keys the job and the
detector use: "train" (the flow's training images), "reference" (the attention's
`attention.n_reference` training images, drawn once), "eval" (held-out bits/dim during training),
"test", "heldout" (the typicality test's and the threshold's in-distribution images), "ood"
({name: images}), "calibration" and "density" (the conformal gate's), "labels" (when the adversarial
classifier trains), "train_shape" (the native H, W, C). With data.jpeg_quality every set goes
through that JPEG round trip (the detector's own preprocessing), so sets from different pipelines
are compared by content.
"""

from typing import Any, Dict

import ml_collections
import numpy as np

from inflow_jax import data
from inflow_jax.adversarial import classifier as classifier_lib
from inflow_jax.app.config_checks import attacks_classifier, density_components
from inflow_jax.data.jpeg import jpeg_round_trip
from inflow_jax.gates import check_calibration
from inflow_jax.gates.conformal import check_density_size, check_disjoint


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
  """Every image set the job needs, as float32 NHWC in [0, 1], loaded before anything runs; and
  under "labels" the train/test labels when the adversarial classifier needs them."""
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
  y_test = None
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
  if config.encoder.enabled:  # train None: the encoder learns rotations alone (the report says)
    sets["encoder_labels"] = {
      "train": None if y_train is None else np.asarray(y_train, np.int64),
      "test": None if mode == "train" or y_test is None else np.asarray(y_test, np.int64),
    }
  sets = jpeg_sets(sets, d.jpeg_quality)
  sets["reference"] = reference_images(sets["train"], config.attention.n_reference, config.seed)
  return sets


def jpeg_sets(sets: Dict[str, Any], quality) -> Dict[str, Any]:
  """Every image set of `load_data` through the JPEG round trip (data.jpeg_quality; None: as is)."""
  if quality is None:
    return sets
  convert = lambda x: None if x is None else jpeg_round_trip(x, quality)
  return {
    k: (
      v
      if k in ("train_shape", "labels", "encoder_labels")
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


def reference_images(x_train: np.ndarray, n: int, seed: int) -> np.ndarray:
  """n training images drawn without replacement (seeded): the attention's reference set."""
  return x_train[np.sort(np.random.default_rng([seed, 1]).permutation(len(x_train))[:n])]
