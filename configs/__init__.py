"""`ml_collections` configs of `run.py`: `default.py` is the schema; every other config derives from it."""
