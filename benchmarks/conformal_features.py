"""The choice of the conformal attention's per-image features and mixture size (issue 14), measured.

Fair JPEG protocol (every set through JPEG q75), the Glow fixture flow; density fitted on
`--n_density` (5000) random CIFAR-10 training images (seed 0), `--bags` (8) bootstrap mixtures; the
5000 cifar10_test_5k images split at random into calibration and evaluation halves `--splits` times;
OOD = the first 2500 of svhn_test_5k, celeba_3k, mnist_test_5k and all of fashion_mnist_test_1k. Per
variant (features x mixture components), averaged over the splits: per-image AUROC against the
evaluation half, one OOD image among 9 evaluation images flagged (Cauchy batch test of the conformal
p-values, level 0.05, 500 batches), batches of 5 OOD images flagged, and the false alarms of batches
of 10 evaluation images.

    python benchmarks/conformal_features.py [--splits 5] [--components auto 4] [--n_density 5000]
        [--bags 8] [--density_images N] [--json]

`--density_images N`: in each split the density is fitted on N of the calibration half's images
(unseen by the flow) instead of the training images, and the other 2500 - N calibrate
(`InFlowDetector.fit(..., x_density=...)`, `data.density_split`).

Features: `scale` = the flow's per-scale prior bits/dim (every level's but the last), `png` = PNG
bits/dim, `half` = PNG bits/dim of the half-resolution copy (`inflow_jax.gates.features`; the
default is scale + png + half).
"""

import argparse

import common
import numpy as np

from inflow_jax.data import load_images
from inflow_jax.data.jpeg import jpeg_round_trip
from inflow_jax.evaluation.metrics import auroc
from inflow_jax.gates.conformal import scores_of_features
from inflow_jax.gates.density import fit_density
from inflow_jax.gates.features import image_features
from inflow_jax.gates.p_values import batch_p_value, conformal_p_values
from inflow_jax.model.flow_file import load_flow_file

OOD = {
  "svhn": "svhn_test_5k",
  "celeba": "celeba_3k",
  "mnist": "mnist_test_5k",
  "fashion_mnist": "fashion_mnist_test_1k",
}
VARIANTS = {
  "scale+png": -1,
  "scale+png+half": None,
}  # the end of the column slice [scale, png, half]


def load_sets(n_ref: int = 5000, n_ood: int = 2500):
  data = lambda stem, split: load_images(f"npz:{common.SHARED / 'data' / stem}.npz", split)[0]
  train = data("cifar10_train_50k", "train")
  sets = {
    "ref": train[np.random.default_rng(0).choice(len(train), n_ref, replace=False)],
    "test": data("cifar10_test_5k", "test"),
  }
  sets.update({name: data(stem, "test")[:n_ood] for name, stem in OOD.items()})
  return {name: jpeg_round_trip(x, 75) for name, x in sets.items()}


def flagged(
  rng, p_in: np.ndarray, p_out: np.ndarray, n_in: int, n_out: int, n_batches: int
) -> float:
  """Fraction of batches of n_in in-distribution and n_out OOD p-values the Cauchy test flags."""
  return float(
    np.mean(
      [
        batch_p_value(
          np.r_[rng.choice(p_in, n_in, replace=False), rng.choice(p_out, n_out, replace=False)],
          "cauchy",
        )
        < 0.05
        for _ in range(n_batches)
      ]
    )
  )


def evaluate(
  features, components, splits: int, seed: int = 0, density_images: int = 0, bags: int = 8
):
  fit = lambda f: {
    name: scores_of_features(fit_density(f, components, seed=0, n_bags=bags), x)
    for name, x in features.items()
  }
  scores = fit(features["ref"])
  rng, rows = np.random.default_rng(seed), []
  for _ in range(splits):
    order = rng.permutation(len(features["test"]))
    half = len(order) // 2
    if density_images:  # the density on unseen images, calibration on the rest of the half
      scores = fit(features["test"][order[:density_images]])
    calibration = np.sort(scores["test"][order[density_images:half]])
    evaluation = scores["test"][order[half:]]
    p_in = conformal_p_values(calibration, evaluation)
    row = {"false_alarms_m10": flagged(rng, p_in, p_in, 10, 0, 500)}
    for name in OOD:
      p_out = conformal_p_values(calibration, scores[name])
      row[f"{name}_auroc"] = auroc(evaluation, scores[name])
      row[f"{name}_one_in_10"] = flagged(rng, p_in, p_out, 9, 1, 500)
      row[f"{name}_batch_5"] = flagged(rng, p_in, p_out, 0, 5, 300)
    rows.append(row)
  return {k: round(float(np.mean([r[k] for r in rows])), 3) for k in rows[0]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--splits", type=int, default=5)
  parser.add_argument(
    "--components", type=lambda v: v if v == "auto" else int(v), nargs="+", default=["auto", 4]
  )
  parser.add_argument("--n_density", type=int, default=5000)
  parser.add_argument("--bags", type=int, default=8)
  parser.add_argument("--density_images", type=int, default=0)
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args()
  model, variables = load_flow_file(common.SHARED / "fixtures" / "inflow_glow_cifar10.npz")
  columns = {
    name: image_features(model, variables, x) for name, x in load_sets(args.n_density).items()
  }
  for variant, stop in VARIANTS.items():
    features = {name: c[:, :stop] for name, c in columns.items()}
    for components in args.components:
      result = {
        "features": variant,
        "components": components,
        "n_density": args.n_density,
        "bags": args.bags,
        "density_images": args.density_images,
        **evaluate(
          features, components, args.splits, density_images=args.density_images, bags=args.bags
        ),
      }
      common.emit({**result, **common.machine()}, args.json)


if __name__ == "__main__":
  main()
