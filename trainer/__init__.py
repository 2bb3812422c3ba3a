"""The bundled Keye trainer (issue 11) and its CorDA++ adapters (`trainer/corda/`, issue 12). Beam-free."""
