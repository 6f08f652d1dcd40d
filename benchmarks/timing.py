"""Wall-clock timing shared by the benchmarks. Framework-free: the PyTorch-side scripts import it from a scratch
venv that has torch but not JAX."""

import statistics
import time
from collections.abc import Callable


def mean_ms(fn: Callable, calls: int, sync: Callable) -> float:
    """Mean wall time of `calls` calls of `fn`, in ms; `sync(result)` waits for the last result (JAX dispatches
    asynchronously)."""
    start = time.perf_counter()
    for _ in range(calls):
        result = fn()
    sync(result)
    return (time.perf_counter() - start) / calls * 1e3


def time_in_rounds(parts: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Each of `parts` (name: a timed call returning ms) once per round, in turn, so that machine drift spreads
    over all of them: {name: ms of each round}."""
    times = {name: [] for name in parts}
    for _ in range(rounds):
        for name, timed in parts.items():
            times[name].append(timed())
    return times


def print_step_parts(times: dict[str, list[float]]) -> None:
    """Prints the median ms of the parts 'forward', 'forward + backward' and 'step' with their rounds, and the
    backward and optimizer shares they imply."""
    median = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"  {name}: {median[name]:.1f} (rounds {[round(value, 1) for value in values]})")
    print(f"  backward: {median['forward + backward'] - median['forward']:.1f}; "
          f"optimizer and the rest: {median['step'] - median['forward + backward']:.1f}")
