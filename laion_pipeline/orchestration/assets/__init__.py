"""The asset graph, one module per layer: sources, raw, staging, search database, serving."""
