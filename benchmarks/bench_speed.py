"""Speed on whatever device JAX sees (CPU, GPU, TPU), one command for a GPU check:

  python benchmarks/bench_speed.py [--steps 5] [--peak_tflops T] [--json]

* training: images/s of one optimiser step of the Glow config's flow (`configs/cifar10_glow.py`,
  batch 64, bits/dim loss) and of the trained encoder (`config.encoder`, batch 256, RotPred loss),
  the step's FLOPs from XLA's cost analysis, and model FLOP utilisation = achieved FLOP/s / peak
  (`--peak_tflops`; default: the device's dense bf16 peak where known, else none).
* scoring: `InFlowDetector.image_scores` images/s (preprocessed images, compiled first) of a
  detector with the Glow flow, the encoder and its feature flow, and of the same detector without
  the encoder (pixel only): what the encoder adds. Weights are untrained (speed does not depend on
  them); the detector is fitted on uniform noise.

Each figure is the median of `--steps` timed calls after a compiling one (all runs listed).
"""

import argparse
import sys

import common
import jax
import numpy as np

from configs import cifar10_glow, default
from inflow_jax.detector import InFlowDetector
from inflow_jax.model import ClassifierEncoder, InFlow, TrainedEncoder
from inflow_jax.training.encoder import encoder_loss
from inflow_jax.training.losses import FlowLoss
from inflow_jax.training.optimizer import make_optimizer
from inflow_jax.training.step import TrainState, make_mesh, make_step, replicate, split_variables

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "TPU v4": 275.0, "TPU v5": 459.0}


def _train_rate(loss_fn, variables, train_config, batch, steps: int):
  """(median images/s, GFLOP per step, every call's seconds) of make_step(loss_fn) on batch."""
  mesh = make_mesh()
  step = make_step(loss_fn, train_config, mesh)
  params, constants = split_variables(variables)
  state = replicate(
    TrainState(np.zeros((), np.int32), params, make_optimizer(train_config).init(params)), mesh
  )
  constants = replicate(constants, mesh)
  lowered = step.lower(state, constants, batch).compile().cost_analysis()
  flops = (lowered[0] if isinstance(lowered, list) else lowered).get("flops", float("nan"))
  carry = [state, constants]

  def one(_):
    carry[0], carry[1], loss = step(carry[0], carry[1], batch)
    return loss

  times = [wall for wall, _ in common.call_times(one, steps)]
  images = len(batch[0] if isinstance(batch, tuple) else batch)
  return images / float(np.median(times)), flops / 1e9, times


def training_rows(steps: int):
  rng = np.random.default_rng(0)
  glow = cifar10_glow.get_config()
  model = InFlow(**glow.model)
  x = np.round(rng.random((glow.train.batch_size, 32, 32, 3)) * 255) / 255
  x = x.astype(np.float32)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x[:2], 1.0)
  rows = {"glow": _train_rate(FlowLoss(model, "bpd", 0), variables, glow.train, x, steps)}
  config = default.get_config()
  encoder = ClassifierEncoder(**config.encoder.model)
  batch = config.encoder.train.batch_size
  x = rng.random((batch, 32, 32, 3)).astype(np.float32)
  y = rng.integers(0, 10, batch).astype(np.int32)
  variables = jax.jit(encoder.init)(jax.random.PRNGKey(0), x[:2])
  loss = encoder_loss(encoder, config)
  rows["encoder"] = _train_rate(loss, variables, config.encoder.train, (x, y), steps)
  return rows


def scoring_rows(steps: int, n_images: int = 1000):
  rng = np.random.default_rng(1)
  glow = cifar10_glow.get_config()
  model = InFlow(**glow.model)
  noise = lambda n: rng.random((n, 32, 32, 3)).astype(np.float32)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), noise(2), 1.0)
  config = default.get_config()
  encoder = ClassifierEncoder(**config.encoder.model)
  encoder_variables = jax.jit(encoder.init)(jax.random.PRNGKey(0), noise(2))
  x_ref, x_cal, x = noise(1000), noise(400), noise(n_images)
  rows = {}
  for name, trained in (
    ("pixel only", None),
    ("encoder + both flows", TrainedEncoder(encoder, encoder_variables)),
  ):
    detector = InFlowDetector(
      model, variables, attention="conformal", n_components=1, trained_encoder=trained
    )
    detector.fit(x_ref, x_calibration=x_cal)
    times = [
      wall
      for wall, _ in common.call_times(lambda _: detector.image_scores(x, preprocessed=True), steps)
    ]
    rows[name] = (n_images / float(np.median(times)), times)
  return rows


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--peak_tflops", type=float, default=None)
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args(argv)
  device = jax.devices()[0].device_kind
  peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in device), None)
  result = {
    "machine": common.machine(),
    "device": device,
    "peak_tflops": peak,
    "training": {},
    "scoring": {},
  }
  for name, (rate, gflop, times) in training_rows(args.steps).items():
    step_s = float(np.median(times))
    tflops = gflop / step_s / 1e3
    result["training"][name] = {
      "images_per_s": round(rate, 1),
      "gflop_per_step": round(gflop, 1),
      "tflop_per_s": round(tflops, 4),
      "mfu": None if peak is None else round(tflops / peak, 5),
      "step_s": [round(t, 4) for t in times],
    }
  for name, (rate, times) in scoring_rows(args.steps).items():
    result["scoring"][name] = {
      "images_per_s": round(rate, 1),
      "call_s": [round(t, 3) for t in times],
    }
  common.emit(result, args.json)


if __name__ == "__main__":
  main(sys.argv[1:])
