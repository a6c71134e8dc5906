"""Packaged data files: accelerator catalogue and the embedded default world."""
