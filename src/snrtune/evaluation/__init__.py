"""Stage 4: lm-evaluation-harness benchmarks and the shipped demo tasks (evaluate)."""
