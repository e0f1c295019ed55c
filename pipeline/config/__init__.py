"""Params: loading and checking params.yaml, and the typed sections."""
