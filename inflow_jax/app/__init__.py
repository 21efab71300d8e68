"""What `run.py` runs: the job (job.py: check, train, fit the detector, evaluate, report), the score
mode (score.py), the config checks and the workdir's lock."""
