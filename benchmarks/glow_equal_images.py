"""Issue 13's side-by-side check: held-out bits/dim after an equal number of training images
(25,600 = 400 steps of 64) for configs/cifar10_glow.py and for the recipe of the fixture flow's
30-line script.

    python benchmarks/glow_equal_images.py --workdir /tmp/equal_images [--steps 400] [--json]

Each recipe is the real job: `run.py --config configs/cifar10_glow.py` and the script's recipe
`--config configs/cifar10_glow.py:script` (PyTorch's initialisation of the subnets, Adam 1e-3,
500-step warm-up, clip 50, batch 64, no decay, no EMA), with `train.checkpoint_every=--steps`; once
its step-`--steps` checkpoint is written (manifest and all) the job is killed. The flow is then read
back with `load_flow(workdir)` alone (the EMA parameters for the config) and scored on the first
2000 images of `../shared/data/cifar10_test_5k.npz` (held out: not in the 50k training images),
dequantized once with a fixed seed, x = k/255 + (u - 1/2)/255, computing

    bits/dim = (0.5 |z|^2 + 0.5 D log(2 pi) - log_det + D log 255) / (D log 2)

from `model.apply(variables, x, 1.0) = (z, log_det)` here, not with the library's scores. Both runs
see the same batches (same seed) and the same dequantization noise; the config's schedule, EMA and
skip guard (and its `model.zero_init`, when set) are what differ. The script started its warm-up at
1e-5, the job's starts at 0 (negligible after a few steps). Needs ../shared.
"""

import argparse
import pathlib
import signal
import subprocess
import sys
import time

import common
import jax
import numpy as np

from configs.cifar10_glow import get_config
from inflow_jax import load_flow
from inflow_jax.utils.integrity import MANIFEST

RECIPES = {"config": "configs/cifar10_glow.py", "script": "configs/cifar10_glow.py:script"}


def train_until(workdir: pathlib.Path, steps: int, config: str, timeout_s: float) -> float:
  """Runs the job of `config` in `workdir` until its step-`steps` checkpoint is complete (not again
  when it is there: a rerun scores what an earlier one trained); its wall seconds."""
  command = [
    sys.executable,
    str(common.REPO / "run.py"),
    "--config",
    str(common.REPO / config),
    "--workdir",
    str(workdir),
    f"--config.train.checkpoint_every={steps}",
  ]
  manifest = workdir / "checkpoints" / str(steps) / MANIFEST
  if manifest.exists():
    return float("nan")
  start = time.perf_counter()
  with open(workdir.parent / f"{workdir.name}.log", "w") as log:
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=common.REPO)
    while not manifest.exists():
      if process.poll() is not None:
        raise RuntimeError(
          f"the job in {workdir} ended (exit {process.returncode}) before step {steps}; "
          f"see {log.name}"
        )
      if time.perf_counter() - start > timeout_s:
        process.kill()
        raise TimeoutError(f"no step-{steps} checkpoint in {workdir} after {timeout_s} s")
      time.sleep(2)
    process.send_signal(signal.SIGKILL)
    process.wait()
  return time.perf_counter() - start


def heldout_bpd(
  workdir: pathlib.Path, images: np.ndarray, seed: int, batch_size: int = 250
) -> float:
  """Mean bits/dim of uint8 `images` under `load_flow(workdir)`, from (z, log_det) alone."""
  model, variables = load_flow(workdir)
  apply = jax.jit(lambda x: model.apply(variables, x, 1.0))
  noise = np.random.default_rng(seed).uniform(size=images.shape).astype(np.float32)
  x = images.astype(np.float32) / 255 + (noise - 0.5) / 255
  dims = int(np.prod(images.shape[1:]))
  bits = []
  for start in range(0, len(x), batch_size):
    z, log_det = jax.device_get(apply(x[start : start + batch_size]))
    nll = (
      0.5 * np.sum(np.square(z.reshape(len(z), -1), dtype=np.float64), axis=1)
      + 0.5 * dims * np.log(2 * np.pi)
      - log_det
      + dims * np.log(255.0)
    )
    bits.append(nll / (dims * np.log(2.0)))
  return float(np.mean(np.concatenate(bits)))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", type=pathlib.Path, required=True)
  parser.add_argument("--steps", type=int, default=400)
  parser.add_argument("--heldout", type=int, default=2000)
  parser.add_argument("--seed", type=int, default=1)
  parser.add_argument("--timeout", type=float, default=3600.0)
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args()
  test_file = common.SHARED / "data" / "cifar10_test_5k.npz"
  if not test_file.exists():
    raise SystemExit(f"{test_file} is missing: this benchmark needs ../shared (or INFLOW_SHARED)")
  args.workdir.mkdir(parents=True, exist_ok=True)
  images = np.load(test_file)["x"][: args.heldout]
  result = {
    "steps": args.steps,
    "images": get_config().train.batch_size * args.steps,
    "heldout_images": len(images),
  }
  for name, config in RECIPES.items():
    seconds = train_until(args.workdir / name, args.steps, config, args.timeout)
    result[f"{name}_bpd"] = round(heldout_bpd(args.workdir / name, images, args.seed), 4)
    result[f"{name}_job_seconds"] = round(seconds, 1)
  common.emit({**result, **common.machine()}, args.json)


if __name__ == "__main__":
  main()
