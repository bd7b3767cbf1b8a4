"""LeukoJAX: leukaemic-blast classifiers (C-NMC 2019, Taleqani ALL) in JAX/Flax."""

__version__ = "0.1.0"
