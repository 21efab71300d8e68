"""Import of the original PyTorch checkpoint (`inflow_jax.model.torch_checkpoint`): parity with the
original's outputs (../shared fixtures), a hand-made state dict against a numpy evaluation of the
original's equations (no fixture needed), key/shape errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
from helpers import fast_jit, shared_file

from inflow_jax.model import InFlow
from inflow_jax.model.torch_checkpoint import (
  load_reference_checkpoint,
  permutations_from_state_dict,
  state_dict_to_variables,
  variables_to_state_dict,
)

CHECKPOINT = "fixtures/inflow_cifar10_epoch150_torch_state.npz"


@functools.cache
def small_state_dict():
  """A width-8 model's weights in the original layout (no fixture needed)."""
  model = InFlow(width=8)
  variables = fast_jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 3)), 1.0)
  return variables_to_state_dict(variables, permutations=((2, 1, 0), (0, 2, 1))), variables


@pytest.mark.shared
def test_parity_with_the_original_flow():
  model, variables = load_reference_checkpoint(shared_file(CHECKPOINT), paper_compat=True)
  exact_model, _ = load_reference_checkpoint(shared_file(CHECKPOINT), paper_compat=False)
  reference = np.load(shared_file("fixtures/inflow_reference_outputs_public.npz"))
  x = reference["x_nchw"].transpose(0, 2, 3, 1)
  forward = fast_jit(lambda a: (model.apply(variables, x, a), exact_model.apply(variables, x, a)))
  for a in (1, 0):
    (z, log_det), (z_exact, log_det_exact) = forward(jnp.float32(a))
    np.testing.assert_allclose(
      z, reference[f"z_alpha{a}_nchw"].transpose(0, 2, 3, 1), atol=1e-4, rtol=0
    )
    np.testing.assert_allclose(log_det, reference[f"logdet_alpha{a}"], rtol=1e-4)
    np.testing.assert_array_equal(z_exact, z)
    np.testing.assert_allclose(log_det_exact, a * log_det, rtol=1e-6)


@pytest.mark.shared
def test_fixture_permutations_are_the_seeded_defaults():
  state = dict(np.load(shared_file(CHECKPOINT)))
  assert permutations_from_state_dict(state) == tuple(tuple(state[f"perm_{k}"]) for k in range(2))
  del state["perm_0"], state["perm_1"]
  assert permutations_from_state_dict(state) == ((2, 1, 0), (0, 2, 1))


@pytest.mark.shared
def test_training_trajectory_checkpoints_load():
  for name in ("train_trajectory_public_init", "train_trajectory_public_final"):
    model, variables = load_reference_checkpoint(shared_file(f"fixtures/{name}.npz"))
    assert (
      model.width == 256 and model.num_blocks == 2 and model.permutations == ((2, 1, 0), (0, 2, 1))
    )
    state = dict(np.load(shared_file(f"fixtures/{name}.npz")))
    back = variables_to_state_dict(variables, model.permutations)
    assert sorted(back) == sorted(state)
    for key in state:
      np.testing.assert_array_equal(back[key], state[key], err_msg=key)


def _conv3x3(x, weight, bias):
  """torch's Conv2d(padding=1) of one image (C, H, W): scipy 2-d cross-correlations, zero border."""
  return np.stack(
    [
      sum(scipy.signal.correlate2d(x[c], weight[o, c], mode="same") for c in range(len(x)))
      + bias[o]
      for o in range(len(weight))
    ]
  )


def original_flow_numpy(state, x, a, paper_compat):
  """The original InFlow forward pass of one image x (C, H, W) in float64 numpy, from its state
  dict: per block k, the subnets conv3x3 - ReLU - conv3x3 on [half, 3 channels of a], the coupling
  y1 = exp(a s2) x1 + a t2, y2 = exp(a s1) x2 + a t1 (s clamped by 2 * 0.636 * atan), then the
  channel permutation perm_k. Returns (z, log_det)."""

  def net(prefix, u):
    hidden = np.maximum(_conv3x3(u, state[f"{prefix}.0.weight"], state[f"{prefix}.0.bias"]), 0)
    return _conv3x3(hidden, state[f"{prefix}.2.weight"], state[f"{prefix}.2.bias"])

  h, log_det, len1 = np.asarray(x, np.float64), 0.0, x.shape[0] // 2
  condition = np.full((3,) + x.shape[1:], a)
  for k in range(2):
    p = f"module_list.{2 * k}.subnet_"
    x1, x2 = h[:len1], h[len1:]
    s2 = 2.0 * 0.636 * np.arctan(net(p + "s2", np.concatenate([x2, condition])))
    y1 = np.exp(a * s2) * x1 + a * net(p + "t2", np.concatenate([x2, condition]))
    s1 = 2.0 * 0.636 * np.arctan(net(p + "s1", np.concatenate([y1, condition])))
    y2 = np.exp(a * s1) * x2 + a * net(p + "t1", np.concatenate([y1, condition]))
    log_det += (s1.sum() + s2.sum()) * (1.0 if paper_compat else a)
    h = np.concatenate([y1, y2])[list(state[f"perm_{k}"])]
  return h, log_det


def test_hand_made_state_dict_gives_the_original_equations(tmp_path):
  """A 2-block, width-4 state dict written by hand in the original's naming and OIHW layout (with
  DataParallel's `module.` prefix and its own permutations), read by `load_reference_checkpoint`:
  the flow's z and log-det equal the original's equations evaluated in numpy."""
  rng = np.random.default_rng(0)
  state = {"perm_0": np.array([1, 2, 0]), "perm_1": np.array([2, 0, 1])}
  for k in range(2):
    for net, (inputs, out) in {"s1": (4, 2), "t1": (4, 2), "s2": (5, 1), "t2": (5, 1)}.items():
      prefix = f"module.module_list.{2 * k}.subnet_{net}"
      state[f"{prefix}.0.weight"] = rng.normal(0, 0.3, (4, inputs, 3, 3)).astype(np.float32)
      state[f"{prefix}.0.bias"] = rng.normal(0, 0.1, 4).astype(np.float32)
      state[f"{prefix}.2.weight"] = rng.normal(0, 0.3, (out, 4, 3, 3)).astype(np.float32)
      state[f"{prefix}.2.bias"] = rng.normal(0, 0.1, out).astype(np.float32)
  np.savez(tmp_path / "original.npz", **state)
  plain = {k.removeprefix("module."): v for k, v in state.items()}
  x = rng.uniform(size=(2, 6, 5, 3)).astype(np.float32)
  for paper_compat in (True, False):
    model, variables = load_reference_checkpoint(tmp_path / "original.npz", paper_compat)
    assert (model.num_blocks, model.width, model.permutations) == (2, 4, ((1, 2, 0), (2, 0, 1)))
    for a in (1.0, 0.5):
      z, log_det = model.apply(variables, x, a)
      for i in range(2):
        want_z, want_log_det = original_flow_numpy(plain, x[i].transpose(2, 0, 1), a, paper_compat)
        np.testing.assert_allclose(z[i], want_z.transpose(1, 2, 0), rtol=1e-5, atol=1e-5)
        assert float(log_det[i]) == pytest.approx(want_log_det, rel=1e-5, abs=1e-4)
        assert abs(want_log_det) > 1.0  # the couplings act: s is far from 0


def test_conversion_round_trip_and_kernel_layout():
  state, variables = small_state_dict()
  converted = state_dict_to_variables(state)
  jax.tree_util.tree_map(np.testing.assert_array_equal, converted, variables)
  # OIHW -> HWIO: weight[o, i, dy, dx] == kernel[dy, dx, i, o]
  kernel = converted["params"]["coupling_1"]["subnet_t2"]["kernel_0"]
  weight = state["module_list.2.subnet_t2.0.weight"]
  assert kernel[2, 0, 4, 7] == weight[7, 4, 2, 0]


def test_mismatched_state_dicts_name_the_keys():
  state, _ = small_state_dict()
  missing = {k: v for k, v in state.items() if k != "module_list.2.subnet_s1.0.bias"}
  with pytest.raises(ValueError, match=r"missing keys.*module_list\.2\.subnet_s1\.0\.bias"):
    state_dict_to_variables(missing)
  with pytest.raises(ValueError, match=r"unexpected keys.*module_list\.0\.actnorm\.scale"):
    state_dict_to_variables({**state, "module_list.0.actnorm.scale": np.ones(3)})
  shaped = {**state, "module_list.0.subnet_t1.2.weight": np.ones((2, 8, 5, 5), np.float32)}
  with pytest.raises(ValueError, match=r"mis-shaped.*module_list\.0\.subnet_t1\.2\.weight"):
    state_dict_to_variables(shaped)
  with pytest.raises(ValueError, match="no coupling weights"):
    state_dict_to_variables({"foo": np.ones(3)})
  with pytest.raises(ValueError, match="not a permutation"):
    permutations_from_state_dict({**state, "perm_1": np.array([0, 0, 1])})


def test_unreadable_files_raise_clear_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    load_reference_checkpoint(tmp_path / "absent.npz")
  corrupt = tmp_path / "corrupt.npz"
  corrupt.write_bytes(b"PK\x03\x04 this is not a zip archive")
  with pytest.raises(ValueError, match="could not read"):
    load_reference_checkpoint(corrupt)
  with pytest.raises(ValueError, match="unknown format"):
    load_reference_checkpoint(corrupt.rename(tmp_path / "weights.h5"))


def test_torch_checkpoint_loads_with_weights_only(tmp_path):
  torch = pytest.importorskip("torch")
  state, variables = small_state_dict()
  path = tmp_path / "10.pt"
  weights = {
    k: torch.from_numpy(np.ascontiguousarray(v))
    for k, v in state.items()
    if not k.startswith("perm_")
  }
  torch.save({"net": {f"module.{k}": v for k, v in weights.items()}, "epoch": 10}, path)
  model, loaded = load_reference_checkpoint(path, paper_compat=False)
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, variables)
  assert model.permutations == ((2, 1, 0), (0, 2, 1)) and not model.paper_compat
  corrupt = tmp_path / "corrupt.pt"
  corrupt.write_bytes(b"\x80\x04garbage")
  with pytest.raises(ValueError, match="could not read"):
    load_reference_checkpoint(corrupt)
