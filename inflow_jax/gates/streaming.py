"""The attention for images that arrive one at a time (beyond the paper): a windowed MMD test.

Image t is gated by `inflow_jax.gates.mmd.mmd_test` of the last `window` images
(t - window + 1 .. t) against the fitted reference, with the key fold_in(key, t), so a deployed
detector needs no hand-made batches. `gate_stream` tests a recorded stream in one jitted pass;
`StreamingGate` is the live version that holds the embeddings of the last `window` images.
"""

import functools
from typing import NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from inflow_jax.gates.mmd import (
  MMDResult,
  MMDState,
  _check_batch_size,
  _check_has_encoder,
  _test_embedded,
)
from inflow_jax.utils.checks import check_images, check_integer, check_key

Array = jax.Array


class StreamResult(NamedTuple):
  """Per arriving image t: the test of images t-window+1 .. t, once `ready` (t >= window - 1)."""

  p_value: Array  # (T,); 1.0 while not ready
  mmd2: Array  # (T,); NaN while not ready
  threshold: Array  # (T,); NaN while not ready
  attention: Array  # (T,); `warmup_attention` while not ready
  ready: Array  # (T,) bool: a full window was tested


@functools.partial(jax.jit, static_argnames=("window",))
def _gate_windows(state: MMDState, emb: Array, key: Array, window: int) -> MMDResult:
  ends = jnp.arange(window - 1, emb.shape[0])

  def one_window(end):
    rows = jax.lax.dynamic_slice_in_dim(emb, end - window + 1, window)
    return _test_embedded(state, rows, jax.random.fold_in(key, end))

  return jax.lax.map(one_window, ends)


def _check_gate(state: MMDState, window, key, warmup_attention) -> Tuple[int, float]:
  """Checks the arguments shared by `gate_stream` and `StreamingGate`; returns (window, warmup)."""
  _check_has_encoder(state)
  window = check_integer(window, "window", 2)
  _check_batch_size(state, window, "window")
  check_key(key)
  if isinstance(warmup_attention, (bool, np.bool_)) or not 0.0 <= float(warmup_attention) <= 1.0:
    raise ValueError(f"warmup_attention must be an attention in [0, 1], got {warmup_attention!r}")
  return window, float(warmup_attention)


def gate_stream(
  state: MMDState, images: Array, window: int, key: Array, *, warmup_attention: float = 1.0
) -> StreamResult:
  """The attention for images arriving one at a time: image t is gated by the MMD test of the last
  `window` images (t - window + 1 .. t) against the reference; the test of window ending at t uses
  the key `fold_in(key, t)`. The first window - 1 images get `warmup_attention` and `ready = False`.

  Beyond the paper: a deployed detector needs no hand-made batches. A shift is flagged once enough
  of the window is shifted; after it ends, the attention recovers within about `window` images.

  Args:
    state: from `fit_mmd`.
    images: (T, H, W, C) float images in [0, 1], in arrival order.
    window: the number of most recent images tested, an integer, 2 <= window <= n_reference.
    key: PRNG key.
    warmup_attention: the attention, in [0, 1], of the first window - 1 images.
  """
  window, warmup_attention = _check_gate(state, window, key, warmup_attention)
  check_images(
    images,
    name="images",
    spatial=state.image_shape[:2],
    channels=state.image_shape[2],
    value_range=(0.0, 1.0),
  )
  n_images, warmup = images.shape[0], min(window - 1, images.shape[0])
  fill = lambda value: jnp.full((warmup,), value, jnp.float32)
  if n_images < window:
    tested = MMDResult(*(jnp.zeros((0,), jnp.float32),) * 4)
  else:
    tested = _gate_windows(state, state.embed(images), key, window)
  return StreamResult(
    p_value=jnp.concatenate([fill(1.0), tested.p_value]),
    mmd2=jnp.concatenate([fill(jnp.nan), tested.mmd2]),
    threshold=jnp.concatenate([fill(jnp.nan), tested.threshold]),
    attention=jnp.concatenate([fill(warmup_attention), tested.attention]),
    ready=jnp.arange(n_images) >= window - 1,
  )


class StreamingGate:
  """Live version of `gate_stream`: `result = gate.update(image)` for each arriving (H, W, C) image.

  Holds the embeddings of the last `window` images; results equal `gate_stream`'s for the same key.
  Before the window fills, `update` returns p_value 1, NaN statistics and `warmup_attention`.
  """

  def __init__(self, state: MMDState, window: int, key: Array, *, warmup_attention: float = 1.0):
    window, warmup_attention = _check_gate(state, window, key, warmup_attention)
    self.state, self.window, self.key = state, window, key
    self.warmup_attention = warmup_attention
    self.count = 0
    self._buffer = []

  @property
  def ready(self) -> bool:
    return self.count >= self.window

  def update(self, image: Array) -> MMDResult:
    image = jnp.asarray(image)
    check_images(
      image[None],
      name="image",
      spatial=self.state.image_shape[:2],
      channels=self.state.image_shape[2],
      value_range=(0.0, 1.0),
    )
    self._buffer = (self._buffer + [self.state.embed(image[None])[0]])[-self.window :]
    self.count += 1
    if not self.ready:
      nan = jnp.float32(jnp.nan)
      return MMDResult(jnp.float32(1.0), nan, nan, jnp.float32(self.warmup_attention))
    key = jax.random.fold_in(self.key, self.count - 1)
    return _test_embedded(self.state, jnp.stack(self._buffer), key)
