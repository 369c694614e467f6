"""Generalists: the big model that answers what the experts can't.

A generalist has ``labels_`` and ``signals(items) -> (proba, features)``:
probabilities over its labels (``out_of_scope`` may be one of them) and the
confidence features the assembly's second-stage out-of-scope detector uses.
"""

from ._head import HeadGeneralist
from ._openai import OpenAIGeneralist

GENERALISTS = {"HeadGeneralist": HeadGeneralist, "OpenAIGeneralist": OpenAIGeneralist}

__all__ = ["HeadGeneralist", "OpenAIGeneralist", "GENERALISTS"]
