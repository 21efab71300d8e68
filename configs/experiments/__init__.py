"""Run configs of recorded experiments on the local ../shared copies (no tfds):
`python run.py --config configs/experiments/X.py --workdir DIR`."""
