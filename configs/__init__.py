"""`ml_collections` configs of `run.py`: `default.py` is the schema; every other config derives from
it.

configs/*.py              run configs (`python run.py --config configs/X.py`)
configs/experiments/*.py  run configs of recorded experiments on the local ../shared copies
configs/components/*.py   pieces that run configs use, not run configs themselves
"""
