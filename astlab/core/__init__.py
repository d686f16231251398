"""The selection core: significance, the PI controller, the selectors and the draw from a score table, `SparseStep`
and `PrunedDataset` (the drop-in API). It imports nothing else from astlab: everything above is a shell around it."""
