"""Speed and memory of the attention's MMD test (fit once, then one test per batch).

  python benchmarks/bench_attention.py --n-ref 5000 --batch-size 250 --n-permutations 100 --json

Reference and test images are CIFAR-10 from ../shared/data when it holds enough images, otherwise
(e.g. --n-ref 50000) uniform random images: speed and memory do not depend on the pixel values.
`mmd_test_ms` is the median over --repeats calls after a warm-up call, embedding the batch included;
`embed_ms` and `test_embedded_ms` split it; `*_cpu_ms` are the same calls in process CPU time. The
machine's load average is printed with the result: other processes on a shared machine slow every
figure down. Single-thread figures:

  export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
  taskset -c 0 python benchmarks/bench_attention.py ...
"""

import argparse
import resource

import common
import jax
import numpy as np

from inflow_jax.gates.encoder import make_encoder
from inflow_jax.gates.mmd import fit_mmd, mmd_test, mmd_test_embedded


def load_images(n: int, batch_size: int, seed: int):
  """(reference, batch, source): CIFAR-10 train/test if available and large enough, else uniform."""
  train, test = (
    common.SHARED / "data/cifar10_train_10k.npz",
    common.SHARED / "data/cifar10_test_5k.npz",
  )
  if train.exists() and test.exists() and n <= 10_000:
    reference = np.load(train)["x"][:n].astype(np.float32) / 255.0
    batch = np.load(test)["x"][:batch_size].astype(np.float32) / 255.0
    return reference, batch, "cifar10"
  rng = np.random.default_rng(seed)
  return (
    rng.uniform(size=(n, 32, 32, 3)).astype(np.float32),
    rng.uniform(size=(batch_size, 32, 32, 3)).astype(np.float32),
    "uniform",
  )


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n-ref", type=int, default=5000)
  parser.add_argument("--batch-size", type=int, default=250)
  parser.add_argument("--n-permutations", type=int, default=100)
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--encoder-seed", type=int, default=0)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", action="store_true", help="print one JSON line")
  args = parser.parse_args()

  reference, batch, source = load_images(args.n_ref, args.batch_size, args.seed)
  encoder = make_encoder(seed=args.encoder_seed)
  jax.block_until_ready(encoder(reference[:2]))  # compile the encoder outside the fit timing
  fitted = []

  def fit():
    fitted.append(fit_mmd(reference, encoder, n_permutations=args.n_permutations))
    return fitted[-1]

  fit_s, fit_cpu_s = common.timed(fit, cpu=True)
  (state,) = fitted

  key = jax.random.PRNGKey(args.seed)
  emb = encoder(batch)

  def median_ms(fn):  # fn(i): the i-th call; fn(0) is the warm-up
    return common.median_ms(common.call_times(fn, args.repeats))

  test_ms, test_cpu_ms = median_ms(lambda i: mmd_test(state, batch, jax.random.fold_in(key, i)))
  embed_ms, embed_cpu_ms = median_ms(lambda i: encoder(batch))
  test_embedded_ms, test_embedded_cpu_ms = median_ms(
    lambda i: mmd_test_embedded(state, emb, jax.random.fold_in(key, i))
  )
  machine = common.machine()
  result = dict(
    n_ref=args.n_ref,
    batch_size=args.batch_size,
    n_permutations=args.n_permutations,
    images=source,
    mmd_test_ms=test_ms,
    embed_ms=embed_ms,
    test_embedded_ms=test_embedded_ms,
    mmd_test_cpu_ms=test_cpu_ms,
    embed_cpu_ms=embed_cpu_ms,
    test_embedded_cpu_ms=test_embedded_cpu_ms,
    fit_s=round(fit_s, 3),
    fit_cpu_s=round(fit_cpu_s, 3),
    state_bytes=state.nbytes,
    state_bytes_without_encoder=state.nbytes
    - sum(np.asarray(leaf).nbytes for leaf in jax.tree_util.tree_leaves(state.embed)),
    peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    load_avg=machine["load_avg"],
    cpu_count=machine["cpu_count"],
    backend=jax.default_backend(),
  )
  common.emit(result, args.json)


if __name__ == "__main__":
  main()
