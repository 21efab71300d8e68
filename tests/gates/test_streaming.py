"""The streaming gate (`inflow_jax.gates.streaming`): windows of the MMD test over images that
arrive one at a time, offline (`gate_stream`) and live (`StreamingGate`), and their errors."""

import jax
import numpy as np
import pytest

from inflow_jax.gates import fit_mmd, mmd_test_embedded
from inflow_jax.gates.streaming import StreamingGate, gate_stream


def _flatten(x):
  """An identity 'encoder' for tests: (n, 1, 1, d) images -> (n, d)."""
  return x.reshape(x.shape[0], -1)


def _vectors(rng, n, d=6, shift=0.0):
  return np.clip(0.5 + shift + 0.1 * rng.standard_normal((n, 1, 1, d)), 0, 1).astype(np.float32)


def test_stream_gate_windows_flag_a_shift_and_match_the_live_gate():
  rng = np.random.default_rng(4)
  state = fit_mmd(_vectors(rng, 200), _flatten, n_permutations=100, level=0.01)
  window = 20
  stream = np.concatenate([_vectors(rng, 30), _vectors(rng, 30, shift=0.15)])
  key = jax.random.PRNGKey(5)
  result = gate_stream(state, stream, window, key)
  assert result.ready.tolist() == [t >= window - 1 for t in range(60)]
  assert np.all(result.attention[: window - 1] == 1.0) and np.all(
    np.isnan(result.mmd2[: window - 1])
  )
  assert np.all(result.attention[window - 1 : 30] == 1.0)  # in-distribution windows pass at 1%
  assert np.all(result.attention[30 + window - 1 :] == 0.0)  # fully shifted windows are flagged
  # one window equals a plain test of those images with the key fold_in(key, t)
  t = 41
  single = mmd_test_embedded(
    state, _flatten(stream[t - window + 1 : t + 1]), jax.random.fold_in(key, t)
  )
  assert float(single.p_value) == float(result.p_value[t])
  np.testing.assert_allclose(float(single.mmd2), float(result.mmd2[t]), atol=1e-7)
  live = StreamingGate(state, window, key)
  for t in range(window + 2):
    step = live.update(stream[t])
    assert float(step.p_value) == float(result.p_value[t])
    assert float(step.attention) == float(result.attention[t])
  assert live.ready


def test_stream_gate_rejects_bad_windows_and_warmup_attention():
  rng = np.random.default_rng(7)
  state = fit_mmd(_vectors(rng, 20), _flatten, n_permutations=20)
  stream, key = _vectors(rng, 12), jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match="window"):
    gate_stream(state, _vectors(rng, 30), 50, key)
  for make in (
    lambda **kw: gate_stream(state, stream, key=key, **kw),
    lambda **kw: StreamingGate(state, key=key, **kw),
  ):
    for window in (10.5, 4.0, True):
      with pytest.raises(TypeError, match="window must be an integer"):
        make(window=window)
    with pytest.raises(ValueError, match="window must be >= 2"):
      make(window=1)
    with pytest.raises(ValueError, match="window holds 21 samples"):
      make(window=21)
    for warmup in (5, -0.1, np.nan):
      with pytest.raises(ValueError, match=r"warmup_attention must be an attention in \[0, 1\]"):
        make(window=4, warmup_attention=warmup)
  result = gate_stream(state, stream, np.int32(4), key, warmup_attention=0.0)
  assert result.attention[:3].tolist() == [0.0] * 3
