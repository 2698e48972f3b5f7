"""Pretraining objectives: each turns packed token blocks into a batch and a loss (objectives/base.py).

To add one, write a file with a subclass of `objectives.base.Objective` decorated with `@register`, and import it
below (or anywhere before building).
"""
from . import clm, electra, fim, hybrid, infill, mlm, span, ul2  # noqa: F401  (registers the built-in objectives)
from .base import OBJECTIVES, Objective, build_objective, objective_class, register

__all__ = ["OBJECTIVES", "Objective", "register", "build_objective", "objective_class"]
