"""C-NMC 2019 TFDS builder.

`from tfds_builders.cnmc2019 import cnmc2019_dataset_builder` registers `cnmc2019` with TFDS.
"""
