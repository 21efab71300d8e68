"""The evaluation protocols (`inflow_jax.evaluation.protocols`, the mixed protocol of
`inflow_jax.evaluation.mixed`), through `inflow_jax.report.evaluate.evaluate_ood` on small data:
table contents against direct computations (the paper protocol, the baselines, the mixed protocol's
false alarms), the table's JSON / markdown / figures, errors."""

import json

import jax
import numpy as np
import pytest

from inflow_jax import data
from inflow_jax.evaluation import baselines, metrics
from inflow_jax.gates.encoder import make_encoder
from inflow_jax.gates.mmd import fit_mmd, mmd_test
from inflow_jax.model import InFlow
from inflow_jax.model.density import make_score_fn
from inflow_jax.report import evaluate, names, tables

BATCH = 20
MIXED_STREAM = 10_000  # the mixed protocol's key: fold_in(key, 10_000)


@pytest.fixture(scope="module")
def setup():
  digits = data.load_images("digits", "train")[0]
  x_ref, x_heldout = digits[:300], digits[300:420]
  x_in = data.load_images("digits", "test", max_images=90)[0]  # 90 = 4 batches of 20 + a partial 10
  ood = {
    "photo_patches": data.load_images("photo_patches", "test", max_images=60)[0],
    "uniform_noise": data.load_images("uniform_noise", "test", max_images=40)[0],
  }
  model = InFlow(num_blocks=2, width=8, paper_compat=True)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), x_in[:2], 1.0)
  state = fit_mmd(x_ref, make_encoder(seed=0), n_permutations=50, level=0.05)
  return model, variables, state, x_in, ood, x_heldout


@pytest.fixture(scope="module")
def table(setup, tmp_path_factory):
  model, variables, state, x_in, ood, x_heldout = setup
  return evaluate.evaluate_ood(
    model,
    variables,
    state,
    x_in,
    ood,
    key=jax.random.PRNGKey(0),
    batch_size=BATCH,
    x_heldout=x_heldout,
    mixed_rhos=(0.25, 1.0),
    mixed_batch_sizes=(10, 20),
    mixed_n_batches=4,
    n_bootstrap=200,
    plot_dir=str(tmp_path_factory.mktemp("figures")),
  )


def test_table_against_direct_computation(setup, table):
  model, variables, _, x_in, ood, _ = setup
  assert table["in_distribution"]["n_batches"] == 5
  assert table["ood"]["photo_patches"]["n_batches"] == 3
  # The paper protocol scores in-distribution images with a = 1: its AUROC can be recomputed
  # directly for a set whose batches are all flagged (scored with a = 0).
  paper_fn = make_score_fn(model, variables, "paper")
  nll_fn = make_score_fn(model, variables, "nll")
  row = table["ood"]["uniform_noise"]
  assert row["batches_flagged"] == row["n_batches"]  # pixel noise vs. digits: always flagged
  expected = metrics.ood_metrics(paper_fn(x_in, 1.0), paper_fn(ood["uniform_noise"], 0.0))
  assert row["paper"] == pytest.approx(expected, abs=1e-6)
  assert row["likelihood"] == pytest.approx(
    metrics.ood_metrics(nll_fn(x_in, 1.0), nll_fn(ood["uniform_noise"], 1.0)), abs=1e-6
  )
  assert row["paper_score_a1"] == pytest.approx(
    metrics.ood_metrics(paper_fn(x_in, 1.0), paper_fn(ood["uniform_noise"], 1.0)), abs=1e-6
  )
  # strict == paper exactly when no in-distribution batch is flagged.
  if table["in_distribution"]["batches_flagged"] == 0:
    assert row["strict"] == row["paper"]
  mixed = table["mixed"]
  assert mixed["batch_sizes"] == [10, 20] and mixed["rhos"] == [0.25, 1.0]
  for name in ood:
    for method in ("inflow", "typicality"):
      power = np.array(mixed["power"][name][method])
      assert power.shape == (2, 2) and np.all((power >= 0) & (power <= 1))
  # pure noise batches of 20: all flagged
  assert mixed["power"]["uniform_noise"]["inflow"][1][1] == 1.0


def test_mixed_false_alarms_are_the_gates_rates_on_the_protocols_batches(setup, table):
  """The false alarms of the mixed protocol recomputed: its first draws (numpy seeded with the
  seed, 0) are the 4 in-distribution batches of each batch size; each batch's own MMD test
  (key fold_in(fold_in(key, 10_000), j), batch b: fold_in of that, b) and the typicality test
  (thresholds bootstrapped from the held-out NLLs at the batch sizes the table tests)."""
  model, variables, state, x_in, _, x_heldout = setup
  mixed = table["mixed"]
  assert set(mixed["false_alarm"]) == {"inflow", "typicality"} and mixed["n_batches"] == 4
  nll_fn = make_score_fn(model, variables, "nll")
  nll_in = np.asarray(nll_fn(x_in, 1.0))
  typicality = baselines.fit_typicality(
    np.asarray(nll_fn(x_heldout, 1.0)), [10, 20], level=0.05, n_bootstrap=200, seed=0
  )
  rng = np.random.default_rng(0)
  key = jax.random.fold_in(jax.random.PRNGKey(0), MIXED_STREAM)
  for j, m in enumerate((10, 20)):
    batches = [rng.choice(len(x_in), m, replace=False) for _ in range(4)]
    cell_key = jax.random.fold_in(key, j)
    p = [
      float(mmd_test(state, x_in[i], jax.random.fold_in(cell_key, b)).p_value)
      for b, i in enumerate(batches)
    ]
    assert mixed["false_alarm"]["inflow"][j] == np.mean(np.array(p) < 0.05)
    flags = [baselines.typicality_test(typicality, nll_in[i]) for i in batches]
    assert mixed["false_alarm"]["typicality"][j] == np.mean(flags)


def test_outputs_json_markdown_png(table):
  again = json.loads(json.dumps(table))
  assert again == table
  text = tables.format_table(table)
  for needle in (
    "| photo_patches | InFlow, paper protocol |",
    "InFlow, strict protocol",
    "input complexity",
    "flow likelihood",
    "in-distribution (false alarms)",
    "| uniform_noise | 1 | ",
  ):
    assert needle in text
  assert "| MMD (paper) |" in text and "MMD (trained encoder)" not in text
  trained = {**table, "encoder": {"steps": 1, "labels": True, "mmd_encoder": "trained"}}
  text = tables.format_table(trained)  # the MMD test on the trained encoder's features
  assert "| MMD (trained encoder) |" in text and "| MMD (paper) |" not in text
  assert "the MMD test embeds images with its features" in text
  assert names.gate_names(trained)["inflow"] == "MMD (trained encoder)"  # tables and plots
  assert names.gate_names(table)["inflow"] == "MMD (paper)"
  for path in table["figures"].values():
    with open(path, "rb") as f:
      assert f.read(4) == b"\x89PNG"


def test_bad_input(setup):
  model, variables, state, x_in, ood, x_heldout = setup
  key = jax.random.PRNGKey(0)
  kwargs = dict(
    key=key, batch_size=BATCH, x_heldout=x_heldout, protocols=("paper",), baselines=False
  )
  with pytest.raises(ValueError, match="larger than ood_sets\\['small'\\]"):
    evaluate.evaluate_ood(
      model, variables, state, x_in, {"small": ood["photo_patches"][:5]}, **kwargs
    )
  with pytest.raises(ValueError, match="NaN"):
    bad = ood["photo_patches"].copy()
    bad[0, 0, 0, 0] = np.nan
    evaluate.evaluate_ood(model, variables, state, x_in, {"bad": bad}, **kwargs)
  with pytest.raises(ValueError, match="ood_sets is empty"):
    evaluate.evaluate_ood(model, variables, state, x_in, {}, **kwargs)
  with pytest.raises(ValueError, match="at least 1"):
    evaluate.evaluate_ood(model, variables, state, x_in[:0], ood, **kwargs)
  with pytest.raises(ValueError, match="16x16|32x32"):
    evaluate.evaluate_ood(
      model, variables, state, x_in, {"small": ood["photo_patches"][:, :16, :16]}, **kwargs
    )
  with pytest.raises(ValueError, match="protocols"):
    evaluate.evaluate_ood(model, variables, state, x_in, ood, **{**kwargs, "protocols": ("fast",)})
  with pytest.raises(ValueError, match="x_heldout"):
    evaluate.evaluate_ood(
      model, variables, state, x_in, ood, **{**kwargs, "x_heldout": None, "baselines": True}
    )
