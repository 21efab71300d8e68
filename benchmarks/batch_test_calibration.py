"""How the conformal batch tests' false-alarm rate scatters given the calibration set (issue 14).

Simulation with `inflow_jax.gates.p_values`: per draw, n calibration and n evaluation scores N(0, 1)
(exchangeable: the null), conformal p-values of the evaluation scores, `--batches` batches of m
evaluation images (disjoint within each pass over a permutation), each batch test at level 0.05. Per
m and test: the mean and standard deviation over `--draws` draws of the false-alarm rate and the
fraction of draws outside [0.02, 0.08]; and the power on one outlier (score + 3) among m null
images. This is what chose the 'auto' test's switch (`TAIL_SCORES`).

    python benchmarks/batch_test_calibration.py [--draws 200] [--n 2500] [--json]
"""

import argparse

import common
import numpy as np

from inflow_jax.gates.p_values import batch_p_value, conformal_p_values

LEVEL = 0.05


def false_alarm_rates(test: str, m: int, n: int, draws: int, batches: int, seed: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  rates = np.empty(draws)
  for d in range(draws):
    p = conformal_p_values(np.sort(rng.normal(size=n)), rng.normal(size=n))
    index = np.concatenate([rng.permutation(n) for _ in range(-(-batches * m // n))])
    index = index[: batches * m].reshape(batches, m)
    rates[d] = np.mean([batch_p_value(p[i], test, n, LEVEL) < LEVEL for i in index])
  return rates


def one_outlier_power(test: str, m: int, n: int, batches: int, seed: int) -> float:
  rng = np.random.default_rng(seed)
  calibration = np.sort(rng.normal(size=n))
  scores = rng.normal(size=(batches, m))
  scores[:, 0] += 3.0
  p = conformal_p_values(calibration, scores.ravel()).reshape(scores.shape)
  return float(np.mean([batch_p_value(row, test, n, LEVEL) < LEVEL for row in p]))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--draws", type=int, default=200)
  parser.add_argument("--n", type=int, default=2500)
  parser.add_argument("--batches", type=int, default=400)
  parser.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 50])
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args()
  for m in args.sizes:
    for test in ("cauchy", "fisher", "simes", "auto"):
      rates = false_alarm_rates(test, m, args.n, args.draws, args.batches, seed=m)
      common.emit(
        {
          "m": m,
          "test": test,
          "n_calibration": args.n,
          "false_alarm_mean": round(float(rates.mean()), 4),
          "false_alarm_sd": round(float(rates.std()), 4),
          "outside_0.02_0.08": round(float(np.mean((rates < 0.02) | (rates > 0.08))), 3),
          "one_outlier_power": one_outlier_power(test, m, args.n, 2000, seed=100 + m),
        },
        args.json,
      )


if __name__ == "__main__":
  main()
