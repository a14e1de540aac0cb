"""Speed benchmarks of the harness: every figure a ratio measured side by side in one process."""
