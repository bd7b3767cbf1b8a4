"""TFDS dataset builders of LeukoJAX, one folder each (`tfds build tfds_builders/<name>`)."""
