"""Restoring, scoring and reporting a trained run: inference over splits and files, metrics, intervals, plots, reports."""
