"""gdexp's Hydra launcher plugin (`hydra/launcher=batched`), found by Hydra's plugin discovery."""
