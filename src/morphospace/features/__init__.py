"""CellProfiler measurements and profiles: aggregation, normalisation, feature selection, sphering."""
