"""The bundled Keye-VL trainer: streams the pipeline's shards, packs them, trains (README, "Trainer")."""
