"""Per-image scores of a trained encoder and of the pixel flow, alone and combined (issue 32).

  python benchmarks/semantic_views.py --encoder_workdir DIR [--out /tmp/views] [--json]

DIR holds `encoder_checkpoints/` of `inflow_jax.training.encoder.train_encoder` (run with
`configs/default.py`'s encoder settings). Fair JPEG protocol: every set (../shared: CIFAR-10 train
and test, TinyImageNet, SVHN, MNIST, Fashion-MNIST, CelebA) goes through `data.preprocess` and one
JPEG q75 round trip. In-distribution = cifar10_test_5k[2500:], calibration = [:2500]; the feature
flow and the post-hoc baselines are fitted on the 50k training images' features; the pixel view is
the Glow fixture's per-image density (`gates.features`), fitted on 5000 training images. Prints the
per-image AUROC of every score and combination (each score a view, or the semantic scores pooled
into one view: `gates.views`), and the false alarms of the calibrated ones.
Intermediate arrays are cached in --out.
"""

import argparse
import pathlib
import sys

import common
import jax
import numpy as np

from configs import default
from inflow_jax import data
from inflow_jax.data.jpeg import jpeg_round_trip
from inflow_jax.evaluation.metrics import auroc
from inflow_jax.gates import posthoc
from inflow_jax.gates.density import density_scores, fit_density
from inflow_jax.gates.features import flow_features
from inflow_jax.gates.p_values import conformal_p_values
from inflow_jax.gates.semantic import rotation_scores
from inflow_jax.gates.views import calibrate_views, views_statistic
from inflow_jax.model import ClassifierEncoder
from inflow_jax.model.classifier_encoder import encode
from inflow_jax.model.flow_file import load_flow_file
from inflow_jax.training import checkpoint as checkpoint_lib
from inflow_jax.training.encoder import _restore
from inflow_jax.training.feature_flow import feature_flow_nll, fit_feature_flow
from inflow_jax.training.step import make_mesh

FILES = {"train": "cifar10_train_50k", "test": "cifar10_test_5k", "tin": "tinyimagenet_3k",
         "svhn": "svhn_test_5k", "mnist": "mnist_test_5k", "fmnist": "fashion_mnist_test_1k",
         "celeba": "celeba_3k"}  # fmt: skip
OOD = ("tin", "svhn", "mnist", "fmnist", "celeba")
CAL, EV = slice(0, 2500), slice(2500, 5000)


def _sets(out: pathlib.Path):
  sets = {}
  for name, stem in FILES.items():
    path = out / f"x_{name}.npz"
    if not path.exists():
      raw = np.load(common.SHARED / "data" / f"{stem}.npz")
      x = jpeg_round_trip(data.preprocess(raw["x"]), 75)
      y = raw["y"] if "y" in raw.files else np.zeros(len(x), np.int64)
      np.savez(path, x=np.round(x * 255).astype(np.uint8), y=y)
    saved = np.load(path)
    sets[name] = (saved["x"].astype(np.float32) / 255, saved["y"])
  return sets


def _encoder(workdir):
  config = default.get_config()
  model = ClassifierEncoder(**config.encoder.model)
  manager = checkpoint_lib.make_manager(
    pathlib.Path(workdir) / "encoder_checkpoints", keep=2, every=1
  )
  state, constants, step = _restore(
    model, config, np.zeros((8, 32, 32, 3), np.float32), make_mesh(), manager
  )
  manager.close()
  return model, jax.device_get({"params": state.params, **constants}), step


def _calibrated(scores, name, table):
  cal = np.sort(scores["test"][CAL])
  p = {k: conformal_p_values(cal, v) for k, v in scores.items()}
  table[name] = {k: auroc(scores["test"][EV], scores[k]) for k in OOD}
  table[name]["false_alarm"] = float(np.mean(p["test"][EV] < 0.05))
  return p


def _two_sided(scores):
  """{set: (N,)} p = min(1, 2 min(p_high, p_low)), the conformal p-values of a score being too high
  or too low (typicality: Nalisnick et al. 2019), calibrated on test[CAL]."""
  cal = np.sort(scores["test"][CAL])
  low_cal = np.sort(-cal)  # p_low(s) = p_high(-s) against the negated scores
  return {
    k: np.minimum(1.0, 2 * np.minimum(conformal_p_values(cal, v), conformal_p_values(low_cal, -v)))
    for k, v in scores.items()
  }


def _feature_flow_scores(feats, names):
  """{set: (N,)} the feature flow's NLL of the normalised features (the gate's semantic score
  'feature_flow'), fitted on the training features."""
  normalised = {
    k: feats[k] / np.maximum(np.linalg.norm(feats[k], axis=1, keepdims=True), 1e-12)
    for k in ("train",) + names
  }
  flow = fit_feature_flow(normalised["train"], num_epochs=10)
  return {k: feature_flow_nll(flow, normalised[k]) for k in names}


def _pooled(scores, semantic):
  """{set: (N,) T} of `gates.views` with the semantic scores pooled, calibrated on test[CAL]."""
  calibration = {v: scores[v]["test"][CAL] for v in ("pixel",) + semantic}
  _, view_calibration = calibrate_views(calibration, pooled=True)
  return {
    k: views_statistic(view_calibration, s, {v: scores[v][k] for v in semantic}, pooled=True)
    for k, s in scores["pixel"].items()
  }


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--encoder_workdir", required=True)
  parser.add_argument("--out", default="/tmp/semantic_views")
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  sets = _sets(out)
  model, variables, step = _encoder(args.encoder_workdir)
  enc = {k: encode(model, variables, x) for k, (x, _) in sets.items()}
  y_train, y_test = sets["train"][1], sets["test"][1]
  table = {
    "encoder_step": step,
    "test_accuracy": float(np.mean(enc["test"].class_logits.argmax(-1) == y_test)),
  }
  names = ("test",) + OOD
  feats = {k: enc[k].features.astype(np.float64) for k in enc}
  mds = posthoc.fit_mds(feats["train"], y_train, 10)
  knn = posthoc.fit_knn(feats["train"])
  head = posthoc.linear_head(feats["train"], enc["train"].class_logits)  # the logit scale included
  vim = posthoc.fit_vim(feats["train"], *head)
  scores = {
    "msp": {k: posthoc.msp_scores(enc[k].class_logits) for k in names},
    "energy": {k: posthoc.energy_scores(enc[k].class_logits) for k in names},
    "mds": {k: posthoc.mds_scores(mds, feats[k]) for k in names},
    "knn": {k: posthoc.knn_scores(knn, feats[k]) for k in names},
    "vim": {k: posthoc.vim_scores(vim, feats[k]) for k in names},
    "rotation": {k: rotation_scores(enc[k].rotation_logits) for k in names},
  }
  scores["feature_flow_l2"] = _feature_flow_scores(feats, names)
  pixel_flow, pixel_variables = load_flow_file(
    common.SHARED / "fixtures" / "inflow_glow_cifar10.npz"
  )
  subset = np.random.default_rng(0).permutation(len(sets["train"][0]))[:5000]
  stats = {
    k: flow_features(
      pixel_flow, pixel_variables, sets[k][0][subset] if k == "train" else sets[k][0]
    )[0]
    for k in ("train",) + names
  }
  density = fit_density(stats["train"], "auto", 0)
  scores["pixel"] = {
    k: np.asarray(density_scores(density, stats[k].astype(np.float32))) for k in names
  }
  p = {name: _calibrated(s, name, table) for name, s in scores.items()}
  p["pixel_two_sided"] = _two_sided(scores["pixel"])
  for first in ("pixel", "pixel_two_sided"):
    for other in ("feature_flow_l2", "energy", "vim", "knn"):
      fisher = {k: -np.log(p[first][k]) - np.log(p[other][k]) for k in names}
      _calibrated(fisher, f"fisher({first}, {other})", table)
  for semantic in (("vim", "energy"), ("vim", "energy", "rotation")):
    fisher = {k: -sum(np.log(p[v][k]) for v in ("pixel",) + semantic) for k in names}
    _calibrated(fisher, f"fisher(pixel, {', '.join(semantic)})", table)
    _calibrated(_pooled(scores, semantic), f"pooled(pixel, [{', '.join(semantic)}])", table)
  for row in table.values():
    if isinstance(row, dict):
      row["far_average"] = float(np.mean([row[k] for k in OOD[1:]]))
  common.emit(table, args.json)


if __name__ == "__main__":
  main(sys.argv[1:])
