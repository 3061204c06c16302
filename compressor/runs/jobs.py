"""The old import path of the job manager, kept only while an importer outside compressor/runs has
not moved yet (tests/ui/test_app_review.py). Delete it once none imports from where each name lives now:

    compressor.runs.manager    JobManager, DEFAULT_TARGET (queue, scheduler, cancel, run_inline)
    compressor.runs.context    JobContext, BaselineCache, progress_dict, dict_json (what a target sees)
    compressor.runs.artifacts  ArtifactPolicy (which compressed models are kept)
"""

from compressor.runs.artifacts import ArtifactPolicy
from compressor.runs.context import BaselineCache, JobContext, dict_json, progress_dict
from compressor.runs.manager import DEFAULT_TARGET, JobManager

__all__ = ["DEFAULT_TARGET", "ArtifactPolicy", "BaselineCache", "JobContext", "JobManager", "dict_json",
           "progress_dict"]
