"""Data: sources, synthetic generator, split, hair removal, HDF5 cache, dataset and transforms."""
