"""The honest benchmark: attacks x defenses x eps under four threat models, in one report (``ansm benchmark``).

    from ansm.benchmark import preset_config, run_benchmark
    report = run_benchmark(preset_config("quick", out="runs/benchmark-quick"))
"""

from ansm.benchmark.config import PRESETS, BenchmarkConfig, preset_config
from ansm.benchmark.run import run_benchmark

__all__ = ["PRESETS", "BenchmarkConfig", "preset_config", "run_benchmark"]
