"""Models without a network, the yardstick each deep model must beat (docs/results.md)."""
