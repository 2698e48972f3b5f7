"""Pretraining objectives: each turns packed token blocks into a batch and a loss.

The trainer knows objectives only by name through this registry. To add one, write a file with a subclass of
`objectives.base.Objective` decorated with `@register`, and import it below (or anywhere before building).
"""
import inspect

from pretrain.errors import UserError

OBJECTIVES: dict = {}


def register(cls):
    """Class decorator: make an Objective subclass buildable by its `name`."""
    OBJECTIVES[cls.name] = cls
    return cls


def build_objective(name: str, tokenizer, **options):
    """The objective `name` for `tokenizer` (a PreTrainedTokenizerFast), configured by keyword options."""
    if name not in OBJECTIVES:
        raise UserError(f"unknown objective '{name}'; choose one of {', '.join(sorted(OBJECTIVES))}")
    cls = OBJECTIVES[name]
    known = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "tokenizer")]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise UserError(f"objective '{name}' has no option {', '.join(map(repr, unknown))}; "
                        f"its options are {', '.join(known) or 'none'}")
    return cls(tokenizer, **options)


from . import clm, infill, mlm, span  # noqa: E402,F401  (registers the built-in objectives)

__all__ = ["OBJECTIVES", "register", "build_objective"]
