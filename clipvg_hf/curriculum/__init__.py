"""Self-paced curriculum of CLIP-VG: reliability scoring, SSA, MSA and a DDP-correct curriculum sampler.

Library: :mod:`~clipvg_hf.curriculum.reliability` (scoring), :mod:`~clipvg_hf.curriculum.single_source` (SSA),
:mod:`~clipvg_hf.curriculum.multi_source` (MSA), the sampler, search and selection. The command line is
``clipvg-curriculum {score,ssa,msa,grid}`` (:mod:`clipvg_hf.commands.curriculum`), also
``python -m clipvg_hf.curriculum.<step>``.
"""

from .reliability import (
    HISTOGRAM_BINS,
    ReliabilityScores,
    load_scores,
    reliability_histogram,
    save_scores,
    score_split,
    threshold_subsets,
)
from .runner import (
    CachedTrainer,
    ScoreCommand,
    TrainResult,
    TrainScriptTrainer,
    in_process_scorer,
)
from .sampler import CurriculumSampler, easy_to_hard_pool, sampler_from_scores, threshold_pool
from .search import OFFICIAL_GRID, SearchResult, search_threshold
from .selection import read_row_indices, write_row_indices, write_selection_config

__all__ = [
    "HISTOGRAM_BINS",
    "OFFICIAL_GRID",
    "CachedTrainer",
    "CurriculumSampler",
    "ReliabilityScores",
    "ScoreCommand",
    "SearchResult",
    "TrainResult",
    "TrainScriptTrainer",
    "easy_to_hard_pool",
    "in_process_scorer",
    "load_scores",
    "read_row_indices",
    "reliability_histogram",
    "save_scores",
    "score_split",
    "sampler_from_scores",
    "search_threshold",
    "threshold_pool",
    "threshold_subsets",
    "write_row_indices",
    "write_selection_config",
]
