"""CorDA and CorDA++ adapter initialisation (issue 12), PEFT-style: one module per step.

covariance (hooks, masks, shared inputs) -> decompose (damped Cholesky, CO-SVD) -> metric (compactness)
-> select (streaming per-layer covariance choice) -> allocate (ranks under a parameter budget)
-> adapter (PEFT LoRA modules). Beam-free; docs/corda.md has the math and the derivation of the metric.
"""
