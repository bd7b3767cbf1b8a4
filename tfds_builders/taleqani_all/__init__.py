"""Taleqani ALL TFDS builder.

`from tfds_builders.taleqani_all import taleqani_all_dataset_builder` registers `taleqani_all`.
"""
