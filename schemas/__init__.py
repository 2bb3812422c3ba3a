"""Data contracts: the sample, rejected and manifest rows, reason codes, scores, recipes."""
