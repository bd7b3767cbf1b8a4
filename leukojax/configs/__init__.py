"""Experiment configs (ml_collections), one module per family; `base` holds the shared defaults."""

import os

DIR = os.path.dirname(os.path.abspath(__file__))  # for `--config $DIR/hybrid.py:smoke` outside a checkout
