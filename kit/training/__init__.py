"""The k-fold trainer: losses, samplers, the loader, one (variant, fold) job, and the OOF assembly."""
