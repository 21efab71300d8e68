"""End-to-end scoring throughput: `score_batches` = encoder + MMD permutation test + flow, per
batch.

  python benchmarks/bench_score.py --json

Default setting of the issue: batches of 250, 5000 reference images, 100 permutations, the converted
original checkpoint (width 256) and CIFAR-10 images from ../shared (else a random-init width-256
InFlow and uniform random images: the speed does not depend on the values). The figure is images/s
over --n-images after one warm-up call (compilation excluded); `flow_images_per_s` and
`test_images_per_s` time the two parts alone; `images_per_cpu_s` divides by the CPU seconds the
process used (all threads) instead of wall seconds. No ratio to the original PyTorch pipeline is
reported: that pipeline is not run here. The load average is printed with the result: other
processes on a shared machine slow it down.
"""

import argparse

import common
import jax
import numpy as np

from inflow_jax.detector.batch_scores import score_batches
from inflow_jax.gates.encoder import load_reference_encoder, make_encoder
from inflow_jax.gates.mmd import fit_mmd
from inflow_jax.gates.mmd_batches import attention_tests
from inflow_jax.model import InFlow
from inflow_jax.model.density import make_score_fn


def setup(n_ref: int, n_images: int, seed: int):
  """(model, variables, embed, x_ref, x, source)."""
  shared = common.SHARED
  checkpoint = shared / "fixtures/inflow_cifar10_epoch150_torch_state.npz"
  encoder = shared / "fixtures/uae_encoder_torch_seed0.npz"
  train, test = shared / "data/cifar10_train_10k.npz", shared / "data/cifar10_test_5k.npz"
  if (
    checkpoint.exists()
    and encoder.exists()
    and train.exists()
    and n_ref <= 10_000
    and n_images <= 5000
  ):
    from inflow_jax.data import load_images  # pylint: disable=g-import-not-at-top
    from inflow_jax.model.torch_checkpoint import load_reference_checkpoint  # pylint: disable=g-import-not-at-top

    model, variables = load_reference_checkpoint(str(checkpoint))
    x_ref = load_images(f"npz:{train}", f"train[:{n_ref}]")[0]
    x = load_images(f"npz:{test}", f"test[:{n_images}]")[0]
    return (
      model,
      variables,
      load_reference_encoder(str(encoder)),
      x_ref,
      x,
      "original checkpoint, cifar10",
    )
  rng = np.random.default_rng(seed)
  x_ref = rng.uniform(size=(n_ref, 32, 32, 3)).astype(np.float32)
  x = rng.uniform(size=(n_images, 32, 32, 3)).astype(np.float32)
  model = InFlow(num_blocks=2, width=256, paper_compat=True)
  variables = model.init(jax.random.PRNGKey(seed), x[:2], 1.0)
  return model, variables, make_encoder(seed), x_ref, x, "random-init width 256, uniform images"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n-ref", type=int, default=5000)
  parser.add_argument("--batch-size", type=int, default=250)
  parser.add_argument("--n-images", type=int, default=1000)
  parser.add_argument("--n-permutations", type=int, default=100)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", action="store_true", help="print one JSON line")
  args = parser.parse_args()

  model, variables, embed, x_ref, x, source = setup(args.n_ref, args.n_images, args.seed)
  fit_s = common.timed(lambda: fit_mmd(x_ref, embed, args.n_permutations))
  state = fit_mmd(x_ref, embed, args.n_permutations)
  score_fn = make_score_fn(model, variables, "paper")
  key = jax.random.PRNGKey(args.seed)
  bs = args.batch_size
  warmup_s = common.timed(lambda: score_batches(score_fn, state, x[:bs], bs, key))  # compiles
  total_s, total_cpu_s = common.timed(lambda: score_batches(score_fn, state, x, bs, key), cpu=True)
  test_s = common.timed(lambda: attention_tests(state, x, bs, key))
  flow_s = common.timed(
    lambda: [np.asarray(score_fn(x[i : i + bs], 1.0)) for i in range(0, len(x), bs)]
  )
  n = len(x)
  machine = common.machine()
  result = {
    "images_per_s": n / total_s,
    "flow_images_per_s": n / flow_s,
    "test_images_per_s": n / test_s,
    # Load-independent-ish: images per CPU-second of this process; on a shared machine the wall
    # figure is lower by the share of the cores this process gets.
    "images_per_cpu_s": n / total_cpu_s,
    "n_images": n,
    "batch_size": bs,
    "n_ref": args.n_ref,
    "n_permutations": args.n_permutations,
    "fit_s": fit_s,
    "warmup_s": warmup_s,
    "source": source,
    "device": machine["device"],
    "cpu_count": machine["cpu_count"],
    "loadavg": machine["load_avg"],
  }
  common.emit(result, args.json)


if __name__ == "__main__":
  main()
