"""E-step samplers: rejection (ReST, ReST-EM, RFT), STaR, PPS and LEPA over any implemented plan format.

`run_sampler` writes one record per trial to samples.jsonl (resumable); `training_rows` turns the accepted
ones into hint-free chats for the learner.
"""

from __future__ import annotations

from forethought.samplers.config import SamplerConfig
from forethought.samplers.records import read_records, training_rows
from forethought.samplers.sampling import SamplingStats, run_sampler

__all__ = ["SamplerConfig", "SamplingStats", "read_records", "run_sampler", "training_rows"]
