"""pytest-benchmark suites of the fused ops against the reference (eager and torch.compile); see README.md."""
