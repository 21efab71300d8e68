"""Adversarial inputs on the offline digits config: a freshly trained flow, the digits classifier.

  python benchmarks/adversarial_digits.py --json

Trains the configs/digits.py flow (into --workdir), fits the attention on its reference images, trains
the configs/digits_classifier.py classifier, and runs `evaluate_adversarial`: PGD sets against the
classifier at 1, 2, 8, 32/255 and adaptive attacks (raise the flow likelihood, lower MMD^2) at 8/255 on
--adaptive-ood, all scored against the clean digits test split (paper and strict protocols, baselines).
Nothing is downloaded. The load average is printed with the result: on a shared machine timings are noisy.
"""
import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from configs import digits, digits_classifier  # noqa: E402
from inflow_jax import data  # noqa: E402
from inflow_jax import train as train_lib  # noqa: E402
from inflow_jax.adversarial.evaluation import evaluate_adversarial, format_adversarial_report  # noqa: E402
from inflow_jax.attention import fit_mmd  # noqa: E402
from inflow_jax.encoder import make_encoder  # noqa: E402
from inflow_jax.model import InFlow  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument("--workdir", default=None, help="flow checkpoints (default: a temporary dir)")
  parser.add_argument("--adaptive-ood", default="digits_inverted,photo_patches,uniform_noise")
  parser.add_argument("--flow-steps", type=int, default=None, help="default: configs/digits.py's")
  parser.add_argument("--max-images", type=int, default=None, help="cap on every evaluated set")
  parser.add_argument("--json", action="store_true", help="print one JSON line")
  args = parser.parse_args()
  start = time.time()
  config = digits.get_config()
  if args.flow_steps is not None:
    config.train.num_steps = args.flow_steps
  config.adversarial = digits_classifier.get_config()
  config.adversarial.attack.update(adaptive_ood=tuple(args.adaptive_ood.split(",")))
  d = config.data
  load = lambda name, split: data.load_images(name, split, d.image_size, d.data_dir, args.max_images)
  x_train, y_train = data.load_images(d.train, d.train_split, d.image_size, d.data_dir)
  x_heldout, _ = load(d.train, d.heldout_split)
  x_test, y_test = load(d.test, d.test_split)
  ood = {name: load(name, "test")[0] for name in d.ood}

  model = InFlow(**config.model)
  workdir = args.workdir or tempfile.mkdtemp(prefix="adversarial_digits_")
  variables = train_lib.train(model, x_train, config, workdir, progress=False).variables
  variables = jax.tree_util.tree_map(lambda a: np.asarray(a.addressable_data(0)), variables)
  flow_seconds = time.time() - start
  a = config.attention
  reference = x_train[np.sort(np.random.default_rng([config.seed, 1]).permutation(len(x_train))[:a.n_reference])]
  mmd_state = fit_mmd(reference, make_encoder(a.encoder_seed), a.n_permutations, a.level)
  table = evaluate_adversarial(
      config, model=model, variables=variables, mmd_state=mmd_state, x_test=x_test, y_test=y_test,
      x_train=x_train, y_train=y_train, ood_sets=ood, x_heldout=x_heldout,
      key=jax.random.key(config.seed), in_name="digits", include_clean=True)
  table["settings"].update(flow_train_s=round(flow_seconds, 1), backend=jax.default_backend(),
                           wall_s=round(time.time() - start, 1), loadavg=os.getloadavg())
  if args.json:
    print(json.dumps(table))
  else:
    print(format_adversarial_report(table))
    print(f"\nbackend {jax.default_backend()}, wall {time.time() - start:.0f} s, load average "
          f"{os.getloadavg()}")


if __name__ == "__main__":
  main()
