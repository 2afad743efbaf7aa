"""Forethought: teach language models to plan before they answer, by self-training."""

__version__ = "0.1.0"
