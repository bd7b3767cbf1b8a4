"""LeukoJAX benchmarks: train-step throughput against Keras, MFU, input pipeline, scaling.

`python -m benchmarks.run --suite cpu` runs everything at CPU size and rewrites docs/benchmarks.md;
each part writes JSON to benchmarks/results/ so the doc is always rendered from measurements.
"""
