"""Routers: learned, calibrated gates that pick the expert(s) for each item.

All routers are label-aware (trained on fine labels, scores summed per expert),
calibrated by a temperature fitted on a validation split, and offer top-k
routing with renormalised weights (mixture-of-experts style).
"""

from ._base import Router, top_k
from ._routers import CentroidRouter, KNNRouter, LinearRouter

ROUTERS = {"linear": LinearRouter, "centroid": CentroidRouter, "knn": KNNRouter}

__all__ = ["Router", "LinearRouter", "CentroidRouter", "KNNRouter", "ROUTERS", "top_k"]
