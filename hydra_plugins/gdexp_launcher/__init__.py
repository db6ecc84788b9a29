"""gdexp's Hydra plugins, found by Hydra's plugin discovery: the launcher (`hydra/launcher=batched`)
and the presets of experiments/ as the config group `experiment`."""
