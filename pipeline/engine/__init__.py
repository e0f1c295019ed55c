"""Running the graph: the runner, fingerprints, the run cache and the runs log."""
