"""Attacking through the detector's preprocessing: BPDA with a straight-through JPEG round trip.

A detector that puts every input through a JPEG round trip g (`InFlowDetector(..., jpeg_quality=q)`,
`data.jpeg_quality`) scores s(g(x)); g is not differentiable. The white-box attacker differentiates
s(g(x)) with the backward-pass differentiable approximation dg/dx ~ I (BPDA, Athalye et al. 2018):

    forward:   y = g(x)              (PIL on the host: `jax.pure_callback`)
    backward:  dL/dx = dL/dy

so every ascent step is taken on x but judged, and its gradient taken, at g(x): the attack optimises
what the detector will see. Attacking s(x) instead and letting the detector apply g afterwards is
not an attack on the deployed detector: the round trip undoes most of an 8/255 perturbation.
"""

import dataclasses
import functools
from typing import Any, Callable

import jax
import numpy as np

from inflow_jax.data.jpeg import jpeg_round_trip


def _host_jpeg(x: np.ndarray, quality: int) -> np.ndarray:
  x = np.asarray(x)
  return jpeg_round_trip(x, quality).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def jpeg_straight_through(x: jax.Array, quality: int) -> jax.Array:
  """g(x), the JPEG round trip of x (B, H, W, C) in [0, 1], with the identity as its derivative
  (traceable: the round trip runs on the host)."""
  return jax.pure_callback(
    functools.partial(_host_jpeg, quality=quality), jax.ShapeDtypeStruct(x.shape, x.dtype), x
  )


def _forward(x, quality):
  return jpeg_straight_through(x, quality), None


def _backward(quality, _, cotangent):
  del quality
  return (cotangent,)


jpeg_straight_through.defvjp(_forward, _backward)


@dataclasses.dataclass(frozen=True)
class ThroughJPEG:
  """Objective L(g(x), *args) of an attack objective L (`objectives`), g the JPEG round trip of
  `quality` with the straight-through derivative. Hashable (a static argument of `attacks.pgd`)."""

  objective: Callable[..., jax.Array]
  quality: int

  def __call__(self, x: jax.Array, *args: Any) -> jax.Array:
    return self.objective(jpeg_straight_through(x, self.quality), *args)
