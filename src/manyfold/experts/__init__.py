"""Experts: small specialists that each know a few labels.

An expert follows the scikit-learn contract on encoder features: ``fit(X, y)``
returns ``self``; ``predict`` / ``predict_proba`` over its own ``labels_``; its
``card_`` carries name, description, domain, labels, metrics, size and lineage.
"""

from ._card import ExpertCard
from ._head import HeadExpert, LinearExpert, MLPExpert, check_name

__all__ = ["ExpertCard", "HeadExpert", "LinearExpert", "MLPExpert", "check_name"]
