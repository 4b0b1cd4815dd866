"""Whole jobs composed from the stages: prepare (fields -> crop store) and the demo study."""
