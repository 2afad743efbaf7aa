"""Studies: arms (recipes plus overrides) compared at one generated-token budget, over seeds, in one report.

`forethought study STUDY.yaml` runs (or resumes) one; `forethought report STUDY_DIR` renders it as one HTML page.
"""

from forethought.study.config import ArmConfig, StudyConfig, TransferTask
from forethought.study.runner import Study, load_study, resolve_study, run_study, study_names

__all__ = ["ArmConfig", "Study", "StudyConfig", "TransferTask", "load_study", "resolve_study", "run_study",
           "study_names"]
