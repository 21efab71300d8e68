"""What the report calls each gate and score: one naming for its tables, figures and glossary."""

GATES = {
  "inflow": "MMD (paper)",
  "typicality": "typicality",
  "conformal": "conformal",
  "combined": "combined",
}
TRAINED_MMD_GATES = {**GATES, "inflow": "MMD (trained encoder)"}  # attention.encoder='trained'


def gate_names(table) -> dict:
  """The gates' names for an evaluation table: the MMD test's says which encoder it embeds with."""
  trained = table.get("encoder", {}).get("mmd_encoder") == "trained"
  return TRAINED_MMD_GATES if trained else GATES


# the trained encoder's semantic scores (`inflow_jax.gates.semantic`)
SEMANTIC_SCORES = {
  "vim": "ViM",
  "energy": "energy",
  "rotation": "rotation head's -log p(upright)",
  "feature_flow": "feature flow's NLL",
}

# score name -> (title, x-axis label with units); every score is higher = more OOD
SCORES = {
  "paper": ("InFlow score, paper protocol", "paper score, nats per image (higher = more OOD)"),
  "strict": ("InFlow score, strict protocol", "paper score, nats per image (higher = more OOD)"),
  "likelihood": ("flow likelihood at a = 1", "NLL, bits per dimension"),
  "input_complexity": ("input complexity", "NLL - PNG length, bits per dimension"),
  "image_score": (
    "per-image score",
    "-log density of the flow's statistics, nats (higher = more OOD)",
  ),
}

GLOSSARY = (
  ("paper protocol", "in-distribution batches are scored with a = 1 forced, as the original "
   "evaluation did; OOD batches with the a their MMD test gives. Optimistic: an in-distribution "
   "batch the test flags costs nothing."),
  ("strict protocol", "every batch is scored with the a its own MMD test gives, so false alarms "
   "count."),
  ("MMD (paper)", "the paper's gate: a kernel MMD permutation test of a batch against reference "
   "training images embedded by an untrained random conv encoder; a flagged batch gets a = 0 and "
   "is OOD as a whole."),
  ("MMD (trained encoder)", "the same permutation test on the trained encoder's features "
   "(attention.encoder='trained'), its reference the calibration images, which the encoder never "
   "saw; it replaces the paper's MMD test in every gate and protocol of the report."),
  ("typicality", "Nalisnick et al. 2019: a batch is flagged when its mean NLL is far from the "
   "flow's entropy on held-out in-distribution images (a batch-level baseline)."),
  ("conformal", "per-image p-values: the rank of an image's score (the density of the flow's "
   "statistics) among calibration images the flow never saw; a batch test combines them."),
  ("combined", "the conformal batch test, the MMD test and the mean-shift test of the batch's "
   "mean in one gate (weighted Bonferroni or Cauchy of their p-values)."),
  ("flow likelihood", "the negative log-likelihood in bits per dimension at a = 1 (no attention)."),
  ("paper score at a = 1", "the paper's score with the attention switched off. It is not an OOD "
   "score on its own: an AUROC near 0 means it ranks the OOD set as more typical than the "
   "in-distribution images (the score rewards simple images); it shows what the attention adds."),
  ("input complexity", "Serra et al. 2020: NLL minus the PNG length, in bits per dimension."),
  ("trained encoder", "with config.encoder.enabled, a small CNN trained on the in-distribution "
   "labels (rotation prediction beside them with encoder.rotation_fraction; rotations alone "
   "without labels). Its semantic scores "
   "(encoder.semantic_score: ViM, energy and the rotation head's doubt that the image is upright "
   "with labels, else its feature flow's NLL) join the "
   "per-image score as one semantic p-value (Fisher's statistic of theirs) beside the pixel "
   "flow's, weighed equally; the rows MSP, energy, Mahalanobis, "
   "KNN and ViM are OpenOOD's post-hoc baselines on the same network, the anchors InFlow's "
   "per-image score is compared with."),
  ("AUROC, AUPR, FPR95", "OOD is the positive class. AUROC 0.5 is chance and 1 perfect; below "
   "0.5 the score ranks the sets the wrong way round. FPR95: the fraction of in-distribution "
   "images flagged when 95% of the OOD images are."),
  ("mixed protocol", "batches of m images of which a fraction rho (at least one image) is OOD: "
   "the fraction of batches each gate flags; the rho = 0 rows are false alarms on pure "
   "in-distribution batches, which a calibrated gate keeps near the level."),
)  # fmt: skip
