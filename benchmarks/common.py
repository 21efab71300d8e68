"""What every benchmark shares: the ../shared path (honouring INFLOW_SHARED), timing, the output.

Benchmarks run as scripts (`python benchmarks/X.py`), so this directory is on sys.path:
`import common`.
"""

import json
import os
import pathlib
import time
from typing import Any, Callable, Dict, List, Tuple

import jax
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("INFLOW_SHARED", REPO.parent / "shared"))


def timed(fn: Callable[[], Any], cpu: bool = False):
  """Wall seconds of one fn() (its result waited for); with cpu=True also this process's CPU seconds
  (all threads), which a machine shared with other jobs inflates less than wall time."""
  start, start_cpu = time.perf_counter(), time.process_time()
  jax.block_until_ready(fn())
  wall = time.perf_counter() - start
  return (wall, time.process_time() - start_cpu) if cpu else wall


def call_times(fn: Callable[[int], Any], repeats: int) -> List[Tuple[float, float]]:
  """(wall, cpu) seconds of fn(1) .. fn(repeats), each call waited for, after a warm-up fn(0)
  (compilation). On CPU, un-awaited back-to-back calls overlap and fight over the same cores."""
  jax.block_until_ready(fn(0))
  return [timed(lambda i=i: fn(i), cpu=True) for i in range(1, repeats + 1)]


def median_ms(times: List[Tuple[float, float]]) -> Tuple[float, float]:
  """(wall, cpu) medians of `call_times` in ms."""
  wall, cpu = zip(*times)
  return round(1e3 * float(np.median(wall)), 2), round(1e3 * float(np.median(cpu)), 2)


def machine() -> Dict[str, Any]:
  """The load average, CPU count and JAX device, printed with every result (figures are noisy on a
  shared machine)."""
  return {
    "load_avg": [round(v, 2) for v in os.getloadavg()],
    "cpu_count": os.cpu_count(),
    "device": str(jax.devices()[0]),
  }


def emit(result: Dict[str, Any], as_json: bool) -> None:
  """Prints the result as one JSON line, or one `name: value` line per field."""
  if as_json:
    print(json.dumps(result))
    return
  for name, value in result.items():
    print(f"{name:>28}: {value:.4g}" if isinstance(value, float) else f"{name:>28}: {value}")
