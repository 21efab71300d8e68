"""Every markdown table of the project: the evaluation, the adversarial sets, the job's report.

Evaluators return plain dict tables (`inflow_jax.evaluation.protocols.evaluate_ood`,
`inflow_jax.adversarial.evaluation.evaluate_adversarial`); this module is the one place that formats
them.
"""

import pathlib
from typing import Mapping

import numpy as np

from inflow_jax.adversarial.names import eps_name, set_name_prefix
from inflow_jax.report.names import GATES, GLOSSARY, SEMANTIC_SCORES, gate_names

_ROWS = (
  ("paper", "InFlow, paper protocol"),
  ("strict", "InFlow, strict protocol"),
  ("likelihood", "flow likelihood (NLL bits/dim, a=1)"),
  ("paper_score_a1", "paper score at a=1 (no attention)"),
  ("input_complexity", "input complexity (NLL - PNG bits/dim)"),
  ("image_score", "InFlow per-image score (conformal; with an encoder: both views)"),
  ("msp", "MSP (trained encoder)"),
  ("energy", "energy (trained encoder)"),
  ("mds", "Mahalanobis (trained encoder)"),
  ("knn", "KNN, k=50 (trained encoder)"),
  ("vim", "ViM (trained encoder)"),
)


def _rho_name(rho: float) -> str:
  return "one image" if rho == 0 else f"{rho:g}"


def _mixed_lines(mixed: Mapping, gates: Mapping = GATES) -> list:
  """The mixed protocol: one row per (set, OOD fraction, gate named by `gates`), one column per
  batch size."""
  sizes = mixed["batch_sizes"]
  cell = lambda rate: "-" if rate != rate else f"{rate:.2f}"  # NaN: the gate cannot test that m
  lines = [
    "",
    f"Mixed protocol: fraction of {mixed['n_batches']} batches flagged, by batch size m:",
    "",
    "| set | OOD fraction rho | gate | " + " | ".join(f"m={m}" for m in sizes) + " |",
    "| --- | --- | --- | " + " | ".join("---" for _ in sizes) + " |",
  ]
  for method, rates in mixed["false_alarm"].items():
    lines.append(
      f"| in-distribution (false alarms) | 0 | {gates[method]} | "
      + " | ".join(cell(r) for r in rates)
      + " |"
    )
  for name, power in mixed["power"].items():
    for r, rho in enumerate(mixed["rhos"]):
      for method, rows in power.items():
        lines.append(
          f"| {name} | {_rho_name(rho)} | {gates[method]} | "
          + " | ".join(cell(v) for v in rows[r])
          + " |"
        )
  return lines


def _average_lines(averages: Mapping) -> list:
  """Per-image AUROC averaged over the near-OOD and the far-OOD sets (OpenOOD's summary)."""
  labels = dict(_ROWS)
  lines = ["", "Per-image AUROC, averaged (near-OOD: eval.near_ood; far-OOD: the other sets):", ""]
  lines += ["| score | near-OOD | far-OOD |", "| --- | --- | --- |"]
  cell = lambda row, group: f"{row[group]:.3f}" if group in row else "-"
  for score, row in averages.items():
    lines.append(f"| {labels[score]} | {cell(row, 'near')} | {cell(row, 'far')} |")
  return lines


def _encoder_lines(encoder: Mapping) -> list:
  what = "rotation prediction alone (no labels)"
  if encoder["labels"]:
    what = "classes and rotations" if encoder.get("rotations", True) else "classes"
  line = f"Trained encoder: {encoder['steps']} steps on {what}"
  if "test_accuracy" in encoder:
    line += f"; test accuracy {encoder['test_accuracy']:.4f} (flip-averaged)"
  if "semantic_scores" in encoder:
    views = ", ".join(SEMANTIC_SCORES[s] for s in encoder["semantic_scores"])
    line += f"; its scores in the per-image view: {views}"
  if encoder.get("mmd_encoder") == "trained":
    line += "; the MMD test embeds images with its features (attention.encoder='trained')"
  return ["", line + "."]


def format_table(table: Mapping) -> str:
  """The table as markdown: per-image metrics, batches flagged, and the mixed protocol."""
  s = table["settings"]
  lines = [
    f"Batches of {s['batch_size']}, attention level {s['level']}, {s['n_permutations']} "
    f"permutations, {s['n_reference']} reference images. OOD is the positive class; "
    "higher score = more OOD.",
    "",
    "| OOD set | score | AUROC | AUPR-in | AUPR-out | FPR95 |",
    "| --- | --- | --- | --- | --- | --- |",
  ]
  for name, row in table["ood"].items():
    for key, label in _ROWS:
      if key in row:
        m = row[key]
        lines.append(
          f"| {name} | {label} | {m['auroc']:.3f} | {m['aupr_in']:.3f} | "
          f"{m['aupr_out']:.3f} | {m['fpr95']:.3f} |"
        )
  ind = table["in_distribution"]
  has_typ = "typicality_batches_flagged" in ind
  lines += [
    "",
    f"Batches flagged (batch size {s['batch_size']}):",
    "",
    "| set | InFlow attention test | typicality test |"
    if has_typ
    else "| set | InFlow attention test |",
    "| --- | --- | --- |" if has_typ else "| --- | --- |",
  ]
  rows = [("in-distribution", ind, "typicality_batches_flagged")]
  rows += [(name, row, "typicality_batches_flagged") for name, row in table["ood"].items()]
  for name, row, typ_key in rows:
    cells = [f"{row['batches_flagged']} / {row['n_batches']}"]
    if has_typ:
      cells.append(f"{row[typ_key]} / {row['n_batches']}")
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  if "image_false_alarm" in ind:
    lines += [
      "",
      f"Per image (conformal p < {s['level']}): in-distribution flagged "
      f"{ind['image_false_alarm']:.3f}; "
      + ", ".join(f"{name} {row['image_flagged']:.3f}" for name, row in table["ood"].items()),
    ]
  if table.get("averages"):
    lines += _average_lines(table["averages"])
  if "encoder" in table:
    lines += _encoder_lines(table["encoder"])
  if "mixed" in table:
    lines += _mixed_lines(table["mixed"], gate_names(table))
  if "figures" in table:
    lines += ["", "Figures: " + ", ".join(table["figures"].values())]
  return "\n".join(lines)


def format_adversarial_table(table: Mapping) -> str:
  """Markdown: the classifier's accuracy under attack and the adaptive attacks' before/after.

  (The detection metrics of the adversarial sets are `format_table(table)`.)
  """
  lines = []
  acc = table.get("classifier")
  if acc:
    lines += [
      f"Classifier accuracy on {acc['n_images']} in-distribution test images (clean "
      f"{acc['clean']:.3f}):",
      "",
      "| epsilon | FGSM | PGD |",
      "| --- | --- | --- |",
    ]
    lines += [f"| {k}/255 | {acc['fgsm'][k]:.3f} | {acc['pgd'][k]:.3f} |" for k in acc["pgd"]]
    lines.append("")
  lines += [
    "Adaptive attacks (before -> after): mean NLL bits/dim at a = 1 (lower = more likely), "
    "mean MMD^2 of the test batches, batches flagged by the attention test (and by the mean-shift "
    "test):",
    "",
    "| set | target | epsilon | NLL bits/dim | MMD^2 | batches flagged | images flagged "
    "(conformal p < level) | mean per-image score (in brackets the conformal attacks' "
    "objective: with the clean images' PNG lengths, or with the surrogate's) |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
  ]
  for name, row in table["adaptive"].items():
    images, score = row.get("images_flagged"), row.get("image_score")
    surrogate, shifted = row.get("surrogate_score"), row.get("mean_shift_flagged")
    lines.append(
      f"| {name} | {row['target']} | {eps_name(row['epsilon'])}/255 | {row['nll_bpd'][0]:.4f} -> "
      f"{row['nll_bpd'][1]:.4f} | {row['mmd2'][0]:.4g} -> {row['mmd2'][1]:.4g} | "
      f"{row['batches_flagged'][0]} -> {row['batches_flagged'][1]} / {row['n_batches']}"
      + (f" (mean shift {shifted[0]} -> {shifted[1]})" if shifted else "")
      + " | "
      + (f"{images[0]:.3f} -> {images[1]:.3f} | " if images else "- | ")
      + (f"{score[0]:.4g} -> {score[1]:.4g}" if score else "-")
      + (f" ({surrogate[0]:.4g} -> {surrogate[1]:.4g}) |" if surrogate else " |")
    )
  return "\n".join(lines)


def format_adversarial_report(table: Mapping) -> str:
  """Markdown of a whole `evaluate_adversarial` table: the attacks, then the detection metrics."""
  return format_adversarial_table(table) + "\n\n" + format_table(table)


def report_markdown(config, table, training, timings, figures, checkpoint_step=None) -> str:
  data = config.data
  lines = [
    "# InFlow report",
    "",
    f"In-distribution: `{data.train}` split `{data.train_split}` (training and attention "
    f"reference), `{data.test}` split `{data.test_split}` (test); OOD sets "
    f"(split `{data.ood_split}`): {', '.join(f'`{n}`' for n in data.ood)}.",
    "",
  ]
  if config.checkpoint_path:
    lines += [
      f"Model: the pretrained checkpoint `{config.checkpoint_path}` (not trained here).",
      "",
    ]
  else:
    m = config.model
    lines += [
      f"Model: InFlow, {m.num_blocks} coupling blocks, width {m.width}, clamp {m.clamp}, "
      f"{m.num_scales} scale(s), glow={m.glow}; evaluated: the checkpoint of step "
      f"{checkpoint_step}.",
      "",
    ]
  if training:
    t = config.train
    lines += [
      "## Training",
      "",
      f"{training['steps'][-1]} steps of batch {t.batch_size}, Adam lr {t.learning_rate} "
      f"(betas {t.b1}, {t.b2}), L2 {t.weight_decay}, loss `{t.loss}`. Loss "
      f"{training['loss'][0]:.4g} (first {config.train.log_every} steps) -> "
      f"{training['last_loss'][-1]:.4g} (last step); "
      f"{np.median(training['images_per_s']):.0f} images/s (median over logging intervals); "
      f"schedule {t.schedule} (warm-up {t.warmup_steps} steps), clip_norm {t.clip_norm}, "
      f"ema_decay {t.ema_decay}, skip_factor {t.skip_factor} "
      f"({training.get('skipped_steps', 0)} steps skipped).",
      "",
    ]
    if training["eval_bpd"]:
      lines += [
        "Held-out bits/dim (dequantized, fixed seed): "
        + ", ".join(
          f"{v:.3f} (step {k})" for k, v in zip(training["eval_steps"], training["eval_bpd"])
        )
        + ".",
        "",
      ]
  lines += [
    "## OOD detection",
    "",
    format_table({k: v for k, v in table.items() if k != "figures"}),
    "",
  ]
  if table.get("adversarial"):
    lines += adversarial_markdown(config, table["adversarial"])
  lines += glossary_markdown() + ["## Figures", ""]
  lines += [f"![{name}]({pathlib.Path(path).name})" for name, path in figures.items()]
  lines += ["", "## Timings", "", "| stage | seconds |", "| --- | --- |"]
  lines += [f"| {stage} | {seconds:.1f} |" for stage, seconds in timings.items()]
  return "\n".join(lines) + "\n"


def adversarial_markdown(config, table) -> list:
  adv, data = config.adversarial, config.data
  attack = adv.attack
  lines = ["## Adversarial inputs", ""]
  if table.get("classifier"):
    lines.append(
      f"`{set_name_prefix(data.test)}_pgd{{k}}`: the in-distribution test images perturbed by "
      f"{attack.num_steps}-step PGD (L-infinity, epsilon = k/255, k in "
      f"{', '.join(eps_name(e) for e in attack.epsilons)}) "
      f"against a CNN classifier trained on `{data.train}` `{data.train_split}` "
      f"({adv.train.num_steps} steps of batch {adv.train.batch_size})."
    )
    lines.append("")
  lines += [
    f"`{{ood}}_adaptive_llh` / `{{ood}}_adaptive_mmd`: OOD images perturbed by PGD at epsilon "
    f"{eps_name(attack.adaptive_epsilon)}/255 to raise the flow log-likelihood / to lower the "
    "attention test's MMD^2. Every set is scored as an OOD set against the clean test images.",
    "",
    format_adversarial_report(table),
    "",
  ]
  return lines


def glossary_markdown() -> list:
  """The report's glossary: each protocol, gate and score in a sentence (`report.names`)."""
  return ["## How to read this report", ""] + [f"- **{t}**: {m}" for t, m in GLOSSARY] + [""]
