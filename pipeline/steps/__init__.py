"""The stages, one module each, and the graph that ties them (graph.py)."""
