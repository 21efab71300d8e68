"""Calibration of the attention's MMD test on real images (the long version of the test's check).

  python benchmarks/calibration_attention.py --n-reference-draws 8 --json

Each of --n-batches trials fits a fresh reference of --n-ref CIFAR-10 training images (a seeded
random subset of cifar10_train_10k.npz; all images are embedded once, each reference is fitted from
its embeddings; benchmarks/bench_attention.py times the fit from images) and tests one batch of
--batch-size images drawn (without replacement within the batch) from the 5,000 CIFAR-10 test
images; out-of-distribution: disjoint SVHN test batches against the last reference.

Why a fresh reference per trial: the level of a two-sample permutation test is a statement about
p-values over draws of BOTH samples. With one reference shared by all batches, the batches' p-values
are dependent (each shares the reference's own sampling error) and uniform only on average over
reference draws, so a KS test of 200 of them tests the reference draw as much as the test
(--fixed-reference shows this; measurements: docs/results.md).

With P permutations the p-value (1 + #{permuted >= observed}) / (1 + P) lives on the grid
k / (P + 1), so a KS test against U(0, 1) of those raw values rejects for discreteness alone once
there are enough batches. Reported: the KS test of the randomised p-value p - U / (P + 1) (exactly
U(0, 1) under the null when ties have probability 0), of the raw p-values (for honesty), and of the
p-values of the same batches with --ks-permutations permutations (a fine grid).
--n-reference-draws repeats the protocol with seeds seed, seed + 1, ...
"""

import argparse
import time

import common
import jax
import numpy as np
import scipy.stats

from inflow_jax.gates.encoder import make_encoder
from inflow_jax.gates.mmd import fit_mmd_embedded, mmd_test_embedded


def load(name: str) -> np.ndarray:
  path = common.SHARED / "data" / name
  if not path.exists():
    raise FileNotFoundError(f"{path} is needed (the ../shared data; set INFLOW_SHARED)")
  return np.load(path)["x"].astype(np.float32) / 255.0


def parse_args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n-ref", type=int, default=5000)
  parser.add_argument("--batch-size", type=int, default=250)
  parser.add_argument("--n-batches", type=int, default=200)
  parser.add_argument("--n-permutations", type=int, default=100)
  parser.add_argument(
    "--ks-permutations",
    type=int,
    default=0,
    help="also test each batch with this many permutations (0: skip)",
  )
  parser.add_argument("--n-svhn-batches", type=int, default=20)
  parser.add_argument("--level", type=float, default=0.05)
  parser.add_argument("--encoder-seed", type=int, default=0)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", action="store_true", help="print one JSON line")
  parser.add_argument(
    "--n-reference-draws",
    type=int,
    default=1,
    help="repeat everything with this many seeded reference draws (seed, seed+1, ...)",
  )
  parser.add_argument(
    "--batches-from",
    choices=("test", "train"),
    default="test",
    help="in-distribution batches from the CIFAR-10 test file, or from the training "
    "images left out of the reference (the same file: a control)",
  )
  parser.add_argument(
    "--fixed-reference",
    action="store_true",
    help="one reference subset for all batches of a draw (dependent p-values: see the "
    "module docstring) instead of a fresh one per batch",
  )
  return parser.parse_args()


def main():
  args = parse_args()
  encoder = make_encoder(seed=args.encoder_seed)
  train = np.asarray(encoder(load("cifar10_train_10k.npz")))
  test = np.asarray(encoder(load("cifar10_test_5k.npz")))
  svhn = np.asarray(encoder(load("svhn_test_5k.npz")[: args.n_svhn_batches * args.batch_size]))
  draws = [
    run_draw(args, args.seed + i, encoder, train, test, svhn) for i in range(args.n_reference_draws)
  ]
  result = dict(draws[0])
  if len(draws) > 1:
    result["draws"] = [
      {
        k: d[k]
        for k in (
          "seed",
          "fraction_p_below_level",
          "mean_p_value",
          "ks_pvalue_randomised",
          "svhn_flagged",
        )
      }
      for d in draws
    ]
  result["load_avg"] = common.machine()["load_avg"]
  common.emit(result, args.json)


def in_distribution_tests(args, rng, key, encoder, train: np.ndarray, test: np.ndarray) -> tuple:
  """(the last fitted state, (n_batches,) p-values, their --ks-permutations p-values, seconds): a
  reference per batch (or, with --fixed-reference, one for all) and one in-distribution batch."""
  pool = test

  def fit():
    nonlocal pool
    if args.batches_from == "train":
      order = rng.permutation(len(train))
      reference, pool = train[order[: args.n_ref]], train[order[args.n_ref :]]
    else:
      reference = train[rng.choice(len(train), args.n_ref, replace=False)]
    return fit_mmd_embedded(
      reference, encoder, n_permutations=args.n_permutations, level=args.level
    )

  state = fit()
  p_values, p_fine = [], []
  start = time.perf_counter()
  for i in range(args.n_batches):
    if not args.fixed_reference and i > 0:
      state = fit()
    batch = pool[rng.choice(len(pool), args.batch_size, replace=False)]
    p_values.append(float(mmd_test_embedded(state, batch, jax.random.fold_in(key, i)).p_value))
    if args.ks_permutations:
      fine_state = state.replace(n_permutations=args.ks_permutations)
      p_fine.append(float(mmd_test_embedded(fine_state, batch, jax.random.fold_in(key, i)).p_value))
  return state, np.array(p_values), p_fine, time.perf_counter() - start


def run_draw(
  args, seed: int, encoder, train: np.ndarray, test: np.ndarray, svhn: np.ndarray
) -> dict:
  """One seed: a reference per batch (or, with --fixed-reference, one for all): in-distribution and
  SVHN tests."""
  rng = np.random.default_rng(seed)
  key = jax.random.PRNGKey(seed)
  state, p_values, p_fine, loop_s = in_distribution_tests(args, rng, key, encoder, train, test)
  randomised = p_values - rng.uniform(size=p_values.size) / (1 + args.n_permutations)
  svhn_results = [
    mmd_test_embedded(
      state,
      svhn[i * args.batch_size : (i + 1) * args.batch_size],
      jax.random.fold_in(key, 10**6 + i),
    )
    for i in range(args.n_svhn_batches)
  ]
  below = int(np.sum(p_values < args.level))
  interval = scipy.stats.binomtest(below, args.n_batches).proportion_ci(0.95)
  result = dict(
    seed=seed,
    n_ref=args.n_ref,
    batch_size=args.batch_size,
    n_batches=args.n_batches,
    n_permutations=args.n_permutations,
    level=args.level,
    fixed_reference=args.fixed_reference,
    batches_from=args.batches_from,
    sigma=float(state.sigma[0]),
    fraction_p_below_level=below / args.n_batches,
    fraction_ci95_binomial=[round(interval.low, 4), round(interval.high, 4)],
    mean_p_value=float(p_values.mean()),
    ks_pvalue_randomised=float(scipy.stats.kstest(randomised, "uniform").pvalue),
    ks_pvalue_raw_discrete=float(scipy.stats.kstest(p_values, "uniform").pvalue),
    svhn_flagged=int(sum(float(r.attention) == 0.0 for r in svhn_results)),
    svhn_batches=args.n_svhn_batches,
    svhn_max_p_value=float(max(float(r.p_value) for r in svhn_results)),
    test_loop_s=round(loop_s, 2),
  )
  if args.ks_permutations:
    p_fine = np.array(p_fine)
    result.update(
      ks_permutations=args.ks_permutations,
      ks_pvalue_fine=float(scipy.stats.kstest(p_fine, "uniform").pvalue),
      fraction_fine_below_level=float(np.mean(p_fine < args.level)),
    )
  return result


if __name__ == "__main__":
  main()
