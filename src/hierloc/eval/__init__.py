"""Metrics (OSV5M parity, recall at km, median), scoring of prediction files, reports."""

from hierloc.eval.metrics import (
    ACC_RADII_KM,
    LEVELS,
    distance_metrics,
    entity_level_accuracy,
    geoscore,
    osv5m_level_accuracy,
)
from hierloc.eval.score import PROTOCOLS, ScoreResult, score_files, score_frames

__all__ = [
    "ACC_RADII_KM",
    "LEVELS",
    "PROTOCOLS",
    "ScoreResult",
    "distance_metrics",
    "entity_level_accuracy",
    "geoscore",
    "osv5m_level_accuracy",
    "score_files",
    "score_frames",
]
