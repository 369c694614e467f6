"""The flywheel: big -> small distillation, experts from the teacher alone, folding small -> big.

The machinery lives in :mod:`manyfold._distill`; this package gathers the
public names and adds pool reading (:func:`read_pool`) and the command-line
entry point (:func:`distill_main`).
"""

from .._distill import (
    DistillReport,
    Flywheel,
    RoundReport,
    add_expert_from_teacher,
    distill,
    expert_from_teacher,
    fold,
    pseudo_label,
    teacher_id,
    tune_escalation_budget,
)
from ._cli import add_from_teacher_main, distill_main, fold_main, load_pseudo, save_pseudo
from ._pool import read_pool

__all__ = ["DistillReport", "Flywheel", "RoundReport", "add_expert_from_teacher", "add_from_teacher_main", "distill",
           "distill_main", "expert_from_teacher", "fold", "fold_main",
           "load_pseudo", "pseudo_label", "read_pool", "save_pseudo", "teacher_id", "tune_escalation_budget"]
