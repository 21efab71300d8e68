"""The full CIFAR-10 evaluation on ../shared/data with the converted original checkpoint.

Setting of the original evaluation: reference = the first 5000 images of cifar10_train_10k.npz; in-
distribution = the first 2000 of cifar10_test_5k.npz in file order; OOD = the first 2000 of
svhn_test_5k, celeba_3k, mnist_test_5k and all 1000 of fashion_mnist_test_1k, all as 32x32x3 in [0, 1]
(MNIST / Fashion-MNIST resized 28 -> 32 by PIL bilinear, via `inflow_jax.data`); batches of 250,
100 permutations, level 0.05, the original's torch.manual_seed(0) encoder. Held-out in-distribution
images for the typicality test: cifar10_train_10k[5000:7000] (not in the reference set).

Writes <out>/report.md (tables + the acceptance comparison), <out>/table.json and the PNGs, and prints
the markdown (or, with --json, the table as one JSON line).

  python benchmarks/eval_cifar10.py --out /tmp/inflow_eval
"""
import argparse
import json
import os
import pathlib
import sys
import time

import jax
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from inflow_jax import data  # pylint: disable=wrong-import-position
from inflow_jax.attention import fit_mmd  # pylint: disable=wrong-import-position
from inflow_jax.convert import load_reference_checkpoint  # pylint: disable=wrong-import-position
from inflow_jax.encoder import load_reference_encoder  # pylint: disable=wrong-import-position
from inflow_jax.evaluate import evaluate_ood, format_table  # pylint: disable=wrong-import-position

# The original pipeline's figures (issue 4): paper-protocol AUROC, OOD batches flagged, plain likelihood.
EXPECTED = {"svhn": (1.000, 8, 8, 0.442), "celeba": (1.000, 8, 8, 0.737),
            "mnist": (1.000, 8, 8, 0.442), "fashion_mnist": (1.000, 4, 4, 0.269)}
OOD_FILES = {"svhn": ("svhn_test_5k", 2000), "celeba": ("celeba_3k", 2000),
             "mnist": ("mnist_test_5k", 2000), "fashion_mnist": ("fashion_mnist_test_1k", 1000)}


def _load(data_dir, stem, split):
  return data.load_images(f"npz:{os.path.join(data_dir, stem + '.npz')}", split)[0]


def acceptance(table) -> str:
  lines = ["| OOD set | paper AUROC (original) | OOD batches flagged (original) | "
           "likelihood AUROC, nll (original) | paper score at a=1 AUROC |",
           "| --- | --- | --- | --- | --- |"]
  for name, (auroc, flagged, n, plain) in EXPECTED.items():
    row = table["ood"].get(name)
    if row is None:
      continue
    lines.append(
        f"| {name} | {row['paper']['auroc']:.3f} ({auroc:.3f}) | {row['batches_flagged']} / "
        f"{row['n_batches']} ({flagged} / {n}) | {row['likelihood']['auroc']:.3f} ({plain:.3f}) | "
        f"{row['paper_score_a1']['auroc']:.3f} |")
  ind = table["in_distribution"]
  lines.append(f"\nIn-distribution batches flagged by the attention test: {ind['batches_flagged']} / "
               f"{ind['n_batches']} (original: 0 / 8).")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  shared = REPO.parent / "shared"
  parser.add_argument("--data-dir", default=str(shared / "data"))
  parser.add_argument("--checkpoint", default=str(shared / "fixtures/inflow_cifar10_epoch150_torch_state.npz"))
  parser.add_argument("--encoder", default=str(shared / "fixtures/uae_encoder_torch_seed0.npz"))
  parser.add_argument("--n-reference", type=int, default=5000)
  parser.add_argument("--n-in", type=int, default=2000)
  parser.add_argument("--n-heldout", type=int, default=2000)
  parser.add_argument("--max-ood", type=int, default=None, help="cap on each OOD set (default: as above)")
  parser.add_argument("--batch-size", type=int, default=250)
  parser.add_argument("--n-permutations", type=int, default=100)
  parser.add_argument("--level", type=float, default=0.05)
  parser.add_argument("--mixed-n-batches", type=int, default=20)
  parser.add_argument("--protocols", default="paper,strict,mixed")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default="/tmp/inflow_eval_cifar10")
  parser.add_argument("--json", action="store_true", help="print the table as one JSON line")
  args = parser.parse_args()

  start = time.time()
  model, variables = load_reference_checkpoint(args.checkpoint, paper_compat=True)
  train = _load(args.data_dir, "cifar10_train_10k", f"train[:{args.n_reference + args.n_heldout}]")
  x_ref, x_heldout = train[:args.n_reference], train[args.n_reference:]
  x_in = _load(args.data_dir, "cifar10_test_5k", f"test[:{args.n_in}]")
  ood = {}
  for name, (stem, n) in OOD_FILES.items():
    n = n if args.max_ood is None else min(n, args.max_ood)
    ood[name] = _load(args.data_dir, stem, f"test[:{n}]")
  mmd_state = fit_mmd(x_ref, load_reference_encoder(args.encoder), args.n_permutations, args.level)
  table = evaluate_ood(
      model, variables, mmd_state, x_in, ood, key=jax.random.PRNGKey(args.seed),
      batch_size=args.batch_size, protocols=tuple(args.protocols.split(",")), x_heldout=x_heldout,
      mixed_n_batches=args.mixed_n_batches, seed=args.seed, plot_dir=args.out)
  table["settings"]["seconds"] = round(time.time() - start, 1)
  table["settings"]["loadavg"] = list(os.getloadavg())

  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  (out / "table.json").write_text(json.dumps(table, indent=1))
  report = ("# InFlow on CIFAR-10 (converted original checkpoint)\n\n## Reproduction of the original\n\n"
            + acceptance(table) + "\n\n## All protocols and baselines\n\n" + format_table(table)
            + f"\n\n{table['settings']['seconds']} s; load average {table['settings']['loadavg']}\n")
  (out / "report.md").write_text(report)
  print(json.dumps(table) if args.json else report)


if __name__ == "__main__":
  np.set_printoptions(precision=4)
  main()
