"""Adversarial inputs on CIFAR-10: how well the original pretrained InFlow detects them.

  python benchmarks/adversarial_cifar10.py --n-test 500 --n-ood 300 --batch-size 100 --json

Uses ../shared (or $INFLOW_SHARED; no download): the original checkpoint converted by
`inflow_jax.model.torch_checkpoint.load_reference_checkpoint` (paper_compat), the original encoder,
CIFAR-10 train/test copies (JPEG-75, see ../shared/data/README.md) and the OOD sets SVHN, CelebA,
MNIST, Fashion-MNIST.

1. A small CNN classifier (the model and optimiser of `config.adversarial` in configs/cifar10.py) is
   trained briefly (--classifier-steps) on cifar10_train_10k; its clean accuracy is printed. PGD
   against it at 1, 2, 8/255 perturbs the first --n-test CIFAR-10 test images ("cifar10_pgd{k}").
2. Adaptive attacks at 8/255 on the first --n-ood images of each OOD set: raise the flow likelihood
   ("{ood}_adaptive_llh"), lower the attention test's MMD^2 batch by batch ("{ood}_adaptive_mmd").
3. All of them, and the clean OOD sets, are scored by `evaluate_ood` against the clean CIFAR-10 test
   images (paper and strict protocols and the baselines).

Everything runs on whatever JAX backend is present; on a shared CPU the timings are slow and noisy
(the load average is printed with the result).
"""

import argparse
import sys
import time

import common
import jax
import numpy as np

from configs import cifar10 as cifar10_config
from inflow_jax.adversarial import classifier as classifier_lib
from inflow_jax.adversarial.evaluation import evaluate_adversarial
from inflow_jax.data import load_images
from inflow_jax.gates.encoder import load_reference_encoder
from inflow_jax.gates.mmd import fit_mmd
from inflow_jax.model.torch_checkpoint import load_reference_checkpoint
from inflow_jax.report.tables import format_adversarial_report

OOD_FILES = {
  "svhn": "svhn_test_5k.npz",
  "celeba": "celeba_3k.npz",
  "mnist": "mnist_test_5k.npz",
  "fashion_mnist": "fashion_mnist_test_1k.npz",
}


def shared_images(file: str, max_images=None):
  path = common.SHARED / "data" / file
  if not path.exists():
    sys.exit(f"needs {path} (the ../shared data); set INFLOW_SHARED to its directory")
  return load_images(f"npz:{path}", "test", image_size=32, max_images=max_images)


def parse_args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawTextHelpFormatter
  )
  parser.add_argument(
    "--n-test", type=int, default=500, help="CIFAR-10 test images attacked/scored"
  )
  parser.add_argument("--n-ood", type=int, default=300, help="images per OOD set attacked/scored")
  parser.add_argument("--ood", default="svhn,celeba,mnist,fashion_mnist")
  parser.add_argument("--batch-size", type=int, default=100, help="attention-test batch size")
  parser.add_argument("--n-reference", type=int, default=5000)
  parser.add_argument("--n-permutations", type=int, default=100)
  parser.add_argument("--n-heldout", type=int, default=1000)
  parser.add_argument("--pgd-steps", type=int, default=10)
  parser.add_argument("--classifier-steps", type=int, default=1500)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", action="store_true", help="print one JSON line")
  return parser.parse_args()


def make_config(args: argparse.Namespace):
  """configs/cifar10.py with the benchmark's seed, batch size, classifier steps and PGD settings."""
  config = cifar10_config.get_config()
  config.seed = args.seed
  config.eval.batch_size = args.batch_size
  config.adversarial.seed = args.seed  # the classifier and attacks of configs/default.py, but:
  config.adversarial.train.num_steps = args.classifier_steps
  config.adversarial.attack.update(
    num_steps=args.pgd_steps,
    batch_size=args.batch_size,
    epsilons=(1 / 255, 2 / 255, 8 / 255),
    adaptive_epsilon=8 / 255,
  )
  return config


def load_sets(args: argparse.Namespace) -> dict:
  """The CIFAR-10 training, test and held-out images and the OOD sets of ../shared."""
  x_train, y_train = shared_images("cifar10_train_10k.npz")
  x_all_test, y_all_test = shared_images("cifar10_test_5k.npz")
  names = [n for n in args.ood.split(",") if n]
  return dict(
    x_train=x_train,
    y_train=y_train,
    x_test=x_all_test[: args.n_test],
    y_test=y_all_test[: args.n_test],
    x_heldout=x_all_test[args.n_test : args.n_test + args.n_heldout],
    ood_sets={n: shared_images(OOD_FILES[n], args.n_ood)[0] for n in names},
  )


def report(args: argparse.Namespace, table: dict, start: float, classifier_seconds: float) -> None:
  """Prints the table (one JSON line with --json) with the machine's backend and load."""
  if args.json:
    common.emit(table, as_json=True)
  else:
    print(format_adversarial_report(table))
    print(
      f"\nbackend {jax.default_backend()}, wall {time.time() - start:.0f} s, classifier training "
      f"{classifier_seconds:.0f} s, load average {common.machine()['load_avg']}"
    )


def main():
  args = parse_args()
  start = time.time()
  config = make_config(args)
  sets = load_sets(args)
  model, variables = load_reference_checkpoint(
    common.SHARED / "fixtures/inflow_cifar10_epoch150_torch_state.npz", paper_compat=True
  )
  embed = load_reference_encoder(common.SHARED / "fixtures/uae_encoder_torch_seed0.npz")
  mmd_state = fit_mmd(
    sets["x_train"][: args.n_reference],
    embed,
    n_permutations=args.n_permutations,
    level=config.attention.level,
  )

  tick = time.time()
  classifier_model = classifier_lib.Classifier(**config.adversarial.model)
  trained = classifier_lib.train_classifier(
    classifier_model, sets["x_train"], sets["y_train"], config.adversarial
  )
  classifier_seconds = time.time() - tick

  table = evaluate_adversarial(
    config,
    model=model,
    variables=variables,
    mmd_state=mmd_state,
    x_test=sets["x_test"],
    y_test=sets["y_test"],
    ood_sets=sets["ood_sets"],
    x_heldout=sets["x_heldout"],
    key=jax.random.key(args.seed),
    classifier=(classifier_model, trained.variables),
    in_name="cifar10",
    include_clean=True,
  )
  table["settings"].update(
    n_test=args.n_test,
    n_ood=args.n_ood,
    pgd_steps=args.pgd_steps,
    classifier_steps=args.classifier_steps,
    classifier_train_s=round(classifier_seconds, 1),
    classifier_final_loss=float(np.mean(trained.losses[-50:])),
    backend=jax.default_backend(),
    wall_s=round(time.time() - start, 1),
    loadavg=common.machine()["load_avg"],
  )
  report(args, table, start, classifier_seconds)


if __name__ == "__main__":
  main()
