"""Datasets: find labelled faces in folders, zips and the FER2013 CSV, and load them as arrays."""

from fervid.data.arrays import FaceArrays, load_arrays, load_split
from fervid.data.readers import DatasetIndex, read_dataset

__all__ = ["DatasetIndex", "FaceArrays", "load_arrays", "load_split", "read_dataset"]
