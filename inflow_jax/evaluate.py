"""Evaluation of InFlow against named OOD sets under three protocols, next to three baselines.

Protocols (all use the paper's score, `scoring` convention 'paper'; OOD batches always go through the
attention test, batches of `batch_size` in order, the last partial batch scored):

* `paper`: in-distribution batches are scored with a = 1 forced, as the original evaluation did; the
  test still runs on them and its flags are reported, but they do not affect the scores.
* `strict`: in-distribution batches are scored with the a their own test gives, so false alarms count.
* `mixed`: batches of m images holding round(rho m) OOD images (at least 1) and in-distribution test
  images otherwise, drawn at random without replacement within a batch; for every rho in `mixed_rhos`
  and m in `mixed_batch_sizes`, the detection power = fraction of `mixed_n_batches` batches flagged
  (p < level), and at every m the false-alarm rate on as many pure in-distribution batches. The
  typicality test is run on the very same batches.

Baselines (per image unless said): `likelihood` = the NLL in bits/dim at a = 1 (`nll` convention);
`paper_score_a1` = the paper's score with a = 1 everywhere (no attention); `input_complexity` = NLL -
PNG bits/dim (Serra et al. 2020); `typicality` = the batch-level test of Nalisnick et al. 2019 on the
NLL, thresholds bootstrapped from `x_heldout` (held-out in-distribution images) at the same level as
the attention test.
"""
from typing import Dict, Mapping, Optional, Sequence

import jax
import numpy as np

from inflow_jax import baselines as baselines_lib
from inflow_jax import plots
from inflow_jax.attention import mmd_test
from inflow_jax.checks import check_images
from inflow_jax.metrics import ood_metrics
from inflow_jax.scoring import attention_tests, batch_starts, make_scores_fn

PROTOCOLS = ("paper", "strict", "mixed")


def _batch_sizes_used(n: int, batch_size: int) -> set:
  return set(np.diff(batch_starts(n, batch_size)).tolist())


def _typicality_flags(state, nll, starts) -> np.ndarray:
  return np.array([baselines_lib.typicality_test(state, nll[a:b]) for a, b in zip(starts[:-1], starts[1:])])


def _mixed_protocol(mmd_state, typicality, x_in, nll_in, ood_sets, nll_out, rhos, batch_sizes,
                    n_batches, key, seed) -> Dict:
  rng = np.random.default_rng(seed)
  n_in = x_in.shape[0]
  table = {"rhos": [float(r) for r in rhos], "batch_sizes": [int(m) for m in batch_sizes],
           "n_batches": int(n_batches), "false_alarm": {"inflow": [], "typicality": []}, "power": {}}

  def run(cell_key, draw):
    flags = np.zeros((n_batches, 2), bool)
    for b in range(n_batches):
      x, nll = draw()
      result = mmd_test(mmd_state, x, jax.random.fold_in(cell_key, b))
      flags[b] = (float(result.attention) == 0.0, baselines_lib.typicality_test(typicality, nll))
    return flags.mean(axis=0)

  for j, m in enumerate(batch_sizes):
    if m > n_in:
      raise ValueError(f"mixed batch size {m} is larger than the in-distribution set of {n_in} images")

    def draw_in(m=m):
      idx = rng.choice(n_in, m, replace=False)
      return x_in[idx], nll_in[idx]

    inflow, typ = run(jax.random.fold_in(key, j), draw_in)
    table["false_alarm"]["inflow"].append(float(inflow))
    table["false_alarm"]["typicality"].append(float(typ))

  for s, (name, x_out) in enumerate(ood_sets.items()):
    power = {"inflow": [], "typicality": []}
    for r, rho in enumerate(rhos):
      row = {"inflow": [], "typicality": []}
      for j, m in enumerate(batch_sizes):
        k = max(1, int(round(rho * m)))
        if k > x_out.shape[0]:
          raise ValueError(f"mixed batch (rho={rho}, m={m}) needs {k} images of {name!r}, "
                           f"which has {x_out.shape[0]}")

        def draw(m=m, k=k, x_out=x_out, nll=nll_out[name]):
          i_out = rng.choice(x_out.shape[0], k, replace=False)
          i_in = rng.choice(n_in, m - k, replace=False)
          return (np.concatenate([x_out[i_out], x_in[i_in]]),
                  np.concatenate([nll[i_out], nll_in[i_in]]))

        cell_key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, 1000 + s), r), j)
        inflow, typ = run(cell_key, draw)
        row["inflow"].append(float(inflow))
        row["typicality"].append(float(typ))
      for method in power:
        power[method].append(row[method])
    table["power"][name] = power
  return table


def evaluate_ood(
    model,
    variables,
    mmd_state,
    x_in,
    ood_sets: Mapping[str, np.ndarray],
    *,
    key: jax.Array,
    batch_size: int = 250,
    protocols: Sequence[str] = PROTOCOLS,
    baselines: bool = True,
    x_heldout: Optional[np.ndarray] = None,
    mixed_rhos: Sequence[float] = (0.1, 0.25, 0.5, 1.0),
    mixed_batch_sizes: Sequence[int] = (10, 25, 50, 100, 250),
    mixed_n_batches: int = 20,
    n_bootstrap: int = 1000,
    seed: int = 0,
    plot_dir: Optional[str] = None,
) -> Dict:
  """Scores `x_in` against each OOD set; returns a JSON-serialisable table (see `format_table`).

  Args:
    model, variables: the InFlow flow (either `paper_compat`).
    mmd_state: the fitted attention test (`inflow_jax.attention.fit_mmd`).
    x_in: (N, H, W, C) float32 in-distribution test images in [0, 1].
    ood_sets: {name: (N_k, H, W, C) float32 images in [0, 1]}.
    key: PRNG key of the permutation tests.
    batch_size: images per tested batch (2 <= batch_size <= every set's size).
    protocols: a subset of ('paper', 'strict', 'mixed').
    baselines: add the likelihood, paper-score-at-a=1, input-complexity and typicality baselines.
    x_heldout: held-out in-distribution images (not in x_in, ideally not in the reference set) for the
      typicality test's entropy estimate and bootstrap; needed for the typicality test ('mixed' or
      baselines).
    mixed_rhos, mixed_batch_sizes, mixed_n_batches: the mixed protocol's grid and batches per cell.
    n_bootstrap: bootstrap batches per batch size of the typicality thresholds.
    seed: seed of the mixed-batch draws and of the bootstrap.
    plot_dir: when given, the PNG figures are written there and their paths listed under 'figures'.
  """
  unknown = set(protocols) - set(PROTOCOLS)
  if unknown or not protocols:
    raise ValueError(f"protocols must be a non-empty subset of {PROTOCOLS}, got {tuple(protocols)}")
  if not ood_sets:
    raise ValueError("ood_sets is empty: give at least one named OOD set")
  check_images(x_in, name="x_in", value_range=(0.0, 1.0))
  for name, x in ood_sets.items():
    check_images(x, name=f"ood_sets[{name!r}]", spatial=x_in.shape[1:3], channels=x_in.shape[3],
                 value_range=(0.0, 1.0))
  for name, n in [("x_in", x_in.shape[0])] + [(f"ood_sets[{k!r}]", v.shape[0]) for k, v in ood_sets.items()]:
    if batch_size > n:
      raise ValueError(f"batch_size {batch_size} is larger than {name}, which holds {n} images")
  needs_typicality = baselines or "mixed" in protocols
  if needs_typicality:
    if x_heldout is None:
      raise ValueError("the typicality test (baselines or the mixed protocol) needs x_heldout: "
                       "held-out in-distribution images")
    check_images(x_heldout, name="x_heldout", spatial=x_in.shape[1:3], channels=x_in.shape[3],
                 value_range=(0.0, 1.0))

  x_in = np.asarray(x_in, np.float32)
  ood_sets = {k: np.asarray(v, np.float32) for k, v in ood_sets.items()}
  scores_fn = make_scores_fn(model, variables)   # 'paper' and 'nll' from one pass of the flow
  level = float(mmd_state.level)
  table = {"settings": {
      "batch_size": int(batch_size), "level": level, "n_permutations": int(mmd_state.n_permutations),
      "n_reference": int(mmd_state.n_reference), "protocols": list(protocols), "seed": int(seed)}}

  def at_one(x):
    """{'paper', 'nll'}: per-image scores with a = 1."""
    parts = [scores_fn(x[i:i + batch_size], 1.0) for i in range(0, x.shape[0], batch_size)]
    return {c: np.concatenate([np.asarray(p[c]) for p in parts]) for c in ("paper", "nll")}

  def through_test(x, paper_at_one, set_key):
    """Paper scores with each batch's tested a (= `score_batches`; passed batches reuse the a = 1
    scores, flagged ones are rescored with a = 0), and the batches' starts, p-values and flags."""
    starts, p_values, flagged = attention_tests(mmd_state, x, batch_size, set_key)
    scores = paper_at_one.copy()
    for i in np.flatnonzero(flagged):
      scores[starts[i]:starts[i + 1]] = np.asarray(scores_fn(x[starts[i]:starts[i + 1]], 0.0)["paper"])
    return scores, starts, p_values, flagged

  # In-distribution: one test per batch; 'paper' scores with a = 1, 'strict' with the test's a.
  one_in = at_one(x_in)
  strict_in, starts_in, p_in, flagged_in = through_test(x_in, one_in["paper"], jax.random.fold_in(key, 0))
  table["in_distribution"] = {
      "n_images": int(x_in.shape[0]), "n_batches": int(flagged_in.size),
      "batches_flagged": int(flagged_in.sum()), "p_values": p_in.tolist()}
  figure_scores = {"paper": {"in": one_in["paper"]}, "strict": {"in": strict_in}}
  one_out = {name: at_one(x) for name, x in ood_sets.items()}

  if needs_typicality:
    nll_in = one_in["nll"]
    nll_out = {name: one["nll"] for name, one in one_out.items()}
    sizes = set(int(m) for m in mixed_batch_sizes) if "mixed" in protocols else set()
    for x in [x_in, *ood_sets.values()]:
      sizes |= _batch_sizes_used(x.shape[0], batch_size)
    typicality = baselines_lib.fit_typicality(
        at_one(np.asarray(x_heldout, np.float32))["nll"], sorted(sizes),
        level=level, n_bootstrap=n_bootstrap, seed=seed)
    table["settings"]["typicality_entropy_bpd"] = typicality.entropy
    table["settings"]["n_heldout"] = int(x_heldout.shape[0])
  if baselines:
    table["in_distribution"]["typicality_batches_flagged"] = int(
        _typicality_flags(typicality, nll_in, starts_in).sum())
    png_in = baselines_lib.png_bits_per_dim(x_in)
    figure_scores.update({"likelihood": {"in": nll_in}, "input_complexity": {"in": nll_in - png_in}})

  table["ood"] = {}
  for s, (name, x_out) in enumerate(ood_sets.items()):
    scores_out, starts, p_values, flagged = through_test(
        x_out, one_out[name]["paper"], jax.random.fold_in(key, 1 + s))
    row = {"n_images": int(x_out.shape[0]), "n_batches": int(flagged.size),
           "batches_flagged": int(flagged.sum()), "p_values": p_values.tolist()}
    if "paper" in protocols:
      row["paper"] = ood_metrics(one_in["paper"], scores_out)
    if "strict" in protocols:
      row["strict"] = ood_metrics(strict_in, scores_out)
    figure_scores["paper"][name] = figure_scores["strict"][name] = scores_out
    if baselines:
      ic_out = nll_out[name] - baselines_lib.png_bits_per_dim(x_out)
      row["likelihood"] = ood_metrics(nll_in, nll_out[name])
      row["paper_score_a1"] = ood_metrics(one_in["paper"], one_out[name]["paper"])
      row["input_complexity"] = ood_metrics(nll_in - png_in, ic_out)
      row["typicality_batches_flagged"] = int(_typicality_flags(typicality, nll_out[name], starts).sum())
      figure_scores["likelihood"][name] = nll_out[name]
      figure_scores["input_complexity"][name] = ic_out
    table["ood"][name] = row

  if "mixed" in protocols:
    table["mixed"] = _mixed_protocol(
        mmd_state, typicality, x_in, nll_in, ood_sets, nll_out, mixed_rhos, mixed_batch_sizes,
        mixed_n_batches, jax.random.fold_in(key, 10_000), seed)
  for protocol in ("paper", "strict"):
    if protocol not in protocols:
      figure_scores.pop(protocol)
  if plot_dir is not None:
    table["figures"] = plots.plot_all(table, figure_scores, plot_dir)
  return table


_ROWS = (("paper", "InFlow, paper protocol"), ("strict", "InFlow, strict protocol"),
         ("likelihood", "flow likelihood (NLL bits/dim, a=1)"),
         ("paper_score_a1", "paper score at a=1 (no attention)"),
         ("input_complexity", "input complexity (NLL - PNG bits/dim)"))


def format_table(table: Mapping) -> str:
  """The table as markdown: per-image metrics, batches flagged, and the mixed protocol."""
  s = table["settings"]
  lines = [f"Batches of {s['batch_size']}, attention level {s['level']}, {s['n_permutations']} "
           f"permutations, {s['n_reference']} reference images. OOD is the positive class; "
           "higher score = more OOD.", "",
           "| OOD set | score | AUROC | AUPR-in | AUPR-out | FPR95 |", "| --- | --- | --- | --- | --- | --- |"]
  for name, row in table["ood"].items():
    for key, label in _ROWS:
      if key in row:
        m = row[key]
        lines.append(f"| {name} | {label} | {m['auroc']:.3f} | {m['aupr_in']:.3f} | "
                     f"{m['aupr_out']:.3f} | {m['fpr95']:.3f} |")
  ind = table["in_distribution"]
  has_typ = "typicality_batches_flagged" in ind
  lines += ["", f"Batches flagged (batch size {s['batch_size']}):", "",
            "| set | InFlow attention test | typicality test |" if has_typ else "| set | InFlow attention test |",
            "| --- | --- | --- |" if has_typ else "| --- | --- |"]
  rows = [("in-distribution", ind, "typicality_batches_flagged")]
  rows += [(name, row, "typicality_batches_flagged") for name, row in table["ood"].items()]
  for name, row, typ_key in rows:
    cells = [f"{row['batches_flagged']} / {row['n_batches']}"]
    if has_typ:
      cells.append(f"{row[typ_key]} / {row['n_batches']}")
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  if "mixed" in table:
    mixed = table["mixed"]
    sizes = mixed["batch_sizes"]
    lines += ["", f"Mixed protocol: fraction of {mixed['n_batches']} batches flagged, InFlow attention "
              "test / typicality test, by batch size m:", "",
              "| set | OOD fraction rho | " + " | ".join(f"m={m}" for m in sizes) + " |",
              "| --- | --- | " + " | ".join("---" for _ in sizes) + " |"]
    fa = mixed["false_alarm"]
    lines.append("| in-distribution (false alarms) | 0 | " + " | ".join(
        f"{a:.2f} / {b:.2f}" for a, b in zip(fa["inflow"], fa["typicality"])) + " |")
    for name, power in mixed["power"].items():
      for rho, inflow, typ in zip(mixed["rhos"], power["inflow"], power["typicality"]):
        lines.append(f"| {name} | {rho:g} | " + " | ".join(
            f"{a:.2f} / {b:.2f}" for a, b in zip(inflow, typ)) + " |")
  if "figures" in table:
    lines += ["", "Figures: " + ", ".join(table["figures"].values())]
  return "\n".join(lines)
