"""Speed of the conformal attention (issue 14) on ../shared data with the Glow fixture flow.

Measures, each call waited for, after a warm-up call (compilation):
* `image_scores` images/s on N images (JPEG round trip, flow statistics, PNG lengths, density);
* `test_batch` of one batch of 250 for the paper's MMD gate and for the combined gate;
* `score` of one batch of 250 (the gate plus the flow's scores) for both kinds;
* the flow's statistics pass alone on that batch (what the combined test adds to the MMD test's
  work, besides the PNG lengths, the density and the mean-shift test);
* the mean-shift test alone on that batch (its whitening and 500 permutations).
Every repeat is listed (noisy timings: the list, not the best).

  python benchmarks/bench_conformal.py [--n_images 2500] [--repeats 3] [--json]
"""

import argparse

import common
import jax
import numpy as np

from inflow_jax import InFlowDetector
from inflow_jax.data import preprocess
from inflow_jax.gates import features, mean_shift_p_values
from inflow_jax.model.density import exact_log_det
from inflow_jax.model.flow_file import load_flow_file


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n_images", type=int, default=2500)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args()
  load = lambda stem, sl: preprocess(np.load(common.SHARED / "data" / f"{stem}.npz")["x"][sl])
  model, variables = load_flow_file(common.SHARED / "fixtures" / "inflow_glow_cifar10.npz")
  x_ref, test = load("cifar10_train_10k", slice(0, 5000)), load("cifar10_test_5k", slice(None))
  combined = InFlowDetector(model, variables, attention="combined", jpeg_quality=75).fit(
    x_ref, x_calibration=test[:2500]
  )
  mmd = InFlowDetector(model, variables, attention="mmd", jpeg_quality=75).fit(
    x_ref, mmd_state=combined.mmd_state_
  )
  x, batch = test[2500 : 2500 + args.n_images], test[2500:2750]
  key = lambda i: jax.random.PRNGKey(i)
  image = common.call_times(lambda i: combined.image_scores(x), args.repeats)
  result = {
    "n_images": len(x),
    "image_scores_images_per_s": [round(len(x) / w, 1) for w, _ in image],
  }
  for name, detector in (("mmd", mmd), ("combined", combined)):
    result[f"test_batch_250_{name}_ms"] = [
      round(1e3 * w, 1)
      for w, _ in common.call_times(lambda i: detector.test_batch(batch, key(i)), args.repeats)
    ]
    result[f"score_250_{name}_ms"] = [
      round(1e3 * w, 1)
      for w, _ in common.call_times(lambda i: detector.score(batch, key(i)), args.repeats)
    ]
  flow = lambda xb: features._flow_pass(exact_log_det(model), variables, xb)
  result["flow_pass_250_ms"] = [
    round(1e3 * w, 1) for w, _ in common.call_times(lambda i: flow(batch), args.repeats)
  ]
  shift, starts = combined.conformal_state_.mean_shift, np.array([0, len(batch)])
  prepared = combined.preprocess(batch)
  result["mean_shift_250_ms"] = [
    round(1e3 * w, 1)
    for w, _ in common.call_times(
      lambda i: mean_shift_p_values(shift, prepared, starts, key(i)), args.repeats
    )
  ]
  result.update(common.machine())
  common.emit(result, args.json)


if __name__ == "__main__":
  main()
