"""The five-mode cold-start mixture (Keye-VL Phase II), Beam-free: one module per mode's builder,
the answer verifier, path selection, the format validator, the repetition filter, the code sandbox.
`pipelines/mixture.py` is the thin Beam composite over them."""
