"""Studies of several runs: ``compare`` (one model per estimator, same data and budget) and ``sweep`` (one
run per value of a setting)."""
