"""CodePlan data construction: annotate prompt/response pairs with pseudocode plans, streamed, filtered, resumable."""

from forethought.annotation.pipeline import AnnotateConfig, annotate, sidecar

__all__ = ["AnnotateConfig", "annotate", "sidecar"]
