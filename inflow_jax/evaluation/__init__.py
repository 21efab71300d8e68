"""Evaluation: per-image OOD scores, metrics, baselines, and the protocols that turn them into
tables.

scores.py     per-image scores of the flow ('paper' and 'nll' conventions), `score_batches`
metrics.py    AUROC, AUPR, FPR95 (OOD is the positive class)
baselines.py  the typicality test and the input-complexity score
protocols.py  `evaluate_ood`: the paper / strict protocols and the baselines, as a table
mixed.py      the mixed protocol (OOD images mixed into in-distribution batches)
"""
