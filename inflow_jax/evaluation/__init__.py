"""Evaluation: metrics, baselines and the protocols that turn a detector's answers into tables.

metrics.py     AUROC, AUPR, FPR95 (OOD is the positive class)
baselines.py   the typicality test and the input-complexity score
posthoc.py     OpenOOD's post-hoc classifier baselines: MSP, Energy, MDS, KNN and ViM
set_scores.py  one set through the detector (scores at a = 1 and through the MMD test)
evaluators.py  one small evaluator per protocol and baseline (paper, strict, baselines, mixed...)
mixed.py       the mixed protocol (OOD images mixed into in-distribution batches)
protocols.py   `detector_table` / `ood_table`: the evaluators the settings choose, as one table
"""
