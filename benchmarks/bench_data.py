"""Throughput of the input pipeline: ready float32 batches per second from in-memory arrays.

  python benchmarks/bench_data.py            # a table
  python benchmarks/bench_data.py --json     # one JSON line

Measures `inflow_jax.data.batches` (shuffled, drop_remainder) over
  float32: a preprocessed (N, 32, 32, 3) float32 array (what the training loop feeds);
  uint8: the uint8 (N, 32, 32, 3) array, converted to float32 per batch;
  uint8_resize: uint8 (N, 28, 28, 1) images (MNIST-like), PIL-resized to 32x32x3 per batch;
and `preprocess` of (N, 28, 28, 1) uint8 to (N, 32, 32, 3) float32 once. Random images: the cost
does not depend on the content. Results depend on the machine's load, printed as `loadavg`
(os.getloadavg()).
"""

import argparse

import common
import numpy as np

from inflow_jax import data


def images_per_second(make_iterator, num_images: int, repeats: int) -> float:
  """Best of `repeats` runs of: consume one full pass, images / seconds (each batch is touched)."""
  counts = []

  def one_pass():
    count = 0
    for batch in make_iterator():
      count += len(batch)
      float(batch[0, 0, 0, 0])  # the batch is materialised
    counts.append(count)

  seconds = [common.timed(one_pass) for _ in range(repeats)]
  assert counts[-1] > 0.9 * num_images
  return max(count / s for count, s in zip(counts, seconds))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num-images", type=int, default=10000)
  parser.add_argument("--batch-size", type=int, default=250)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--json", action="store_true", help="print one JSON line")
  args = parser.parse_args()

  rng = np.random.default_rng(0)
  n, b = args.num_images, args.batch_size
  uint8_32 = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  float_32 = data.preprocess(uint8_32)
  uint8_28 = rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)

  results = dict(num_images=n, batch_size=b)
  results["float32_images_per_s"] = images_per_second(
    lambda: data.batches(float_32, b, seed=0), n, args.repeats
  )
  results["uint8_images_per_s"] = images_per_second(
    lambda: data.batches(uint8_32, b, seed=0), n, args.repeats
  )
  results["uint8_resize_28_to_32_images_per_s"] = images_per_second(
    lambda: data.batches(uint8_28, b, seed=0, image_size=32), n, args.repeats
  )
  results["preprocess_28_to_32_images_per_s"] = n / common.timed(
    lambda: data.preprocess(uint8_28, 32)
  )
  machine = common.machine()
  results["loadavg"] = machine["load_avg"]
  results["cpu_count"] = machine["cpu_count"]

  if args.json:
    common.emit(results, as_json=True)
  else:  # a table: images/s with thousands separators
    for key, value in results.items():
      print(f"{key:40s} {value if not isinstance(value, float) else f'{value:,.0f}'}")


if __name__ == "__main__":
  main()
