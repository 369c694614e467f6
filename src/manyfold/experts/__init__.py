"""Experts: small specialists that each know a few labels.

An expert follows the scikit-learn contract: ``fit`` returns ``self``;
``predict`` / ``predict_proba`` over its own ``labels_``; its ``card_`` carries
name, description, domain, labels, metrics, size and lineage. Heads
(:class:`HeadExpert`, ``consumes = "features"``) read the shared encoder's
vectors; whole models (:class:`CNNExpert`, ``consumes = "items"``) read the
items themselves.
"""

from ._card import ExpertCard
from ._cnn import CNNExpert
from ._head import HeadExpert, LinearExpert, MLPExpert, check_name

__all__ = ["ExpertCard", "HeadExpert", "LinearExpert", "MLPExpert", "CNNExpert", "check_name"]
