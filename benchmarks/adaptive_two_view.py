"""The adaptive white-box attack on the semantic detector's per-image score (issue 32).

  python benchmarks/adaptive_two_view.py --detector WORKDIR/detector [--n 200] [--steps 50]

The detector is one saved with a semantic view (a job with `encoder.enabled` and a conformal or
combined gate writes it to WORKDIR/detector). Fair JPEG protocol: every set (../shared:
cifar10_test_5k[2500:] in-distribution, TinyImageNet, SVHN, MNIST, Fashion-MNIST, CelebA, the first
n images of each) goes through the detector's own preprocessing (JPEG q75); PGD (`--steps` sign
steps of 1/255 from the image itself, L-inf 8/255) ascends `adversarial.two_view_objective`'s
objective through the JPEG round trip (BPDA) and the result is JPEG'd again, as every other set.
Also the pixel-only 'conformal' attack (the objective of the pixel view alone) for comparison.
Prints, per set and attack, the per-image AUROC against the in-distribution images and the share of
images with p < level, before and after.
"""

import argparse
import json
import sys

import common
import jax
import ml_collections
import numpy as np

from inflow_jax import InFlowDetector, data
from inflow_jax.adversarial.adaptive_pgd import AttackedDetector, adaptive_images
from inflow_jax.evaluation.metrics import auroc
from inflow_jax.model.density import make_score_fn

FILES = {"tin": "tinyimagenet_3k", "svhn": "svhn_test_5k", "mnist": "mnist_test_5k",
         "fmnist": "fashion_mnist_test_1k", "celeba": "celeba_3k"}  # fmt: skip


def _attacked(detector: InFlowDetector, steps: int) -> AttackedDetector:
  attack = ml_collections.ConfigDict(
    dict(
      adaptive_epsilon=8 / 255,
      adaptive_num_steps=steps,
      adaptive_step_size=1 / 255,
      random_start=False,
      batch_size=50,
      num_steps=steps,
      step_size=1 / 255,
    )
  )
  return AttackedDetector(
    model=detector.model,
    variables=detector.variables,
    mmd_state=detector.mmd_state_,
    conformal_state=detector.conformal_state_,
    nll_fn=make_score_fn(detector.model, detector.variables, "nll"),
    batch_size=detector.batch_size,
    attack_config=attack,
    jpeg_quality=detector.jpeg_quality,
  )


def _row(detector, in_scores, name, target, x):
  scores = detector.image_scores(x, preprocessed=True)
  p = detector.p_values_of_scores(scores)
  return {
    "set": name,
    "attack": target,
    "auroc": round(auroc(in_scores, scores), 4),
    "flagged": round(float(np.mean(p < detector.level)), 4),
  }


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--detector", required=True)
  parser.add_argument("--n", type=int, default=200)
  parser.add_argument("--steps", type=int, default=50)
  parser.add_argument("--targets", default="two_view,conformal")
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args(argv)
  detector = InFlowDetector.load(args.detector)
  x_in = np.load(common.SHARED / "data" / "cifar10_test_5k.npz")["x"][2500:]
  in_scores = detector.image_scores(detector.preprocess(data.preprocess(x_in)), preprocessed=True)
  attacked, rows = _attacked(detector, args.steps), []
  for s, (name, stem) in enumerate(FILES.items()):
    raw = np.load(common.SHARED / "data" / f"{stem}.npz")["x"][: args.n]
    x = detector.preprocess(data.preprocess(raw))
    rows.append(_row(detector, in_scores, name, "none", x))
    for t, target in enumerate(args.targets.split(",")):
      key = jax.random.fold_in(jax.random.PRNGKey(s), t)
      x_adv = adaptive_images(attacked, target, x, key)
      rows.append(_row(detector, in_scores, name, target, x_adv))
      print(json.dumps(rows[-1]) if args.json else rows[-1], flush=True)
  print(json.dumps(rows, indent=1))


if __name__ == "__main__":
  main(sys.argv[1:])
