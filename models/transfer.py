"""Trained weights carried into a model of another shape, for continued pretraining across objectives.

The stacks of one ModelConfig differ only in their attention mask (Stack(causal=...) in models/transformer.py), so
a decoder-only model's `decoder.*` tensors mean the same as an encoder-only model's `encoder.*`: they move by
renaming the stack. An encoder-decoder gives its encoder to an encoder-only model (its decoder, cross-attention
included, is dropped). Token embeddings are shared by every shape.

    plan = plan_transfer(source_cfg, source_shapes, target_model)   # UserError for what does not correspond
    target_model.load_state_dict(plan.tensors(source_state), strict=False)

What the target has and the source lacks (a BERT head transform, token types, a new position scheme) keeps the
target family's fresh initialization and is listed in `plan.fresh`; what the source has and the target has no place
for (another objective's head) is listed in `plan.dropped`. Refused: a pair of shapes without the stacks the
target needs, sizes or depths that differ, and config fields under which the same tensors compute something else.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .config import ModelConfig
from .errors import UserError

# (source arch, target arch) -> {target stack: source stack}
STACKS = {
    ("encoder", "encoder"): {"encoder": "encoder"},
    ("decoder", "decoder"): {"decoder": "decoder"},
    ("encoder-decoder", "encoder-decoder"): {"encoder": "encoder", "decoder": "decoder"},
    ("decoder", "encoder"): {"encoder": "decoder"},
    ("encoder", "decoder"): {"decoder": "encoder"},
    ("encoder-decoder", "encoder"): {"encoder": "encoder"},
}
# Fields under which the same tensors compute another function (heads split otherwise, norms, residual order,
# nonlinearity, biases, embedding scaling): a difference is refused.
MEANING_FIELDS = ("n_heads", "n_kv_heads", "head_dim", "norm", "norm_placement", "activation", "bias",
                  "embedding_norm", "scale_embeddings")
# compared only when both models use this position scheme
POSITION_FIELDS = {"learned": ("position_offset",), "rotary": ("rope_theta",),
                   "relative": ("relative_buckets", "relative_max_distance")}
# allowed and stated: the position scheme (the new scheme's tensors start fresh) and the norms' epsilon
STATED_FIELDS = ("position", "norm_eps")
SIZE_FIELDS = ("vocab_size", "d_model", "d_ff", "max_seq_len", "n_layers", "n_decoder_layers")
LAYER = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.")


@dataclass
class Transfer:
    names: dict[str, str]  # target tensor -> source tensor
    fresh: list[str] = field(default_factory=list)  # target tensors the source lacks: the target's own init
    dropped: list[str] = field(default_factory=list)  # source tensors the target has no place for
    stated: list[str] = field(default_factory=list)  # config differences allowed, e.g. "position learned -> rotary"
    stacks: dict[str, str] = field(default_factory=dict)  # target stack -> source stack

    def tensors(self, state: dict) -> dict:
        """The target's state-dict entries from the source's tensors (fp32, values unchanged)."""
        return {target: state[source].float() for target, source in self.names.items()}


def plan_transfer(source: ModelConfig, shapes: dict, target) -> Transfer:
    """Which source tensor (shapes: name -> shape) fills which tensor of `target` (a Transformer); UserError for
    what does not correspond."""
    cfg = target.config
    stacks = STACKS.get((source.arch, cfg.arch))
    if stacks is None:
        pairs = ", ".join(f"{a} -> {b}" for a, b in STACKS if a != b)
        raise UserError(f"the source ({source.arch}) has no stack for every part of this {cfg.arch} model (carried "
                        f"across shapes: {pairs}); choose a model.preset of a shape the source can fill")
    _check_fields(source, cfg)
    renamed, dropped = _rename(shapes, stacks)
    expected = {k: tuple(v.shape) for k, v in target.state_dict().items()}
    _check_depth(renamed, expected, stacks)
    wrong = [f"{k} {list(shapes[renamed[k]])} vs {list(v)}" for k, v in expected.items()
             if k in renamed and tuple(shapes[renamed[k]]) != v]
    if wrong:
        sizes = [f"{k} {getattr(source, k)} -> {getattr(cfg, k)}" for k in SIZE_FIELDS
                 if getattr(source, k) != getattr(cfg, k)]
        raise UserError(f"{len(wrong)} tensor(s) differ in shape from the source's"
                        f"{' (' + ', '.join(sizes) + ')' if sizes else ''}: {'; '.join(wrong[:6])}"
                        f"{' ...' if len(wrong) > 6 else ''}; give the new run the source's sizes")
    carried = {k: renamed[k] for k in expected if k in renamed}
    direction_changes = any(stack != origin for stack, origin in stacks.items())
    if cfg.position == "relative" and source.position == "relative" and direction_changes:
        # a causal stack's relative buckets are one-sided, a bidirectional one's two-sided: same shape, other meaning
        for name in [k for k in carried if k.endswith("rel_bias.bias.weight")]:
            del carried[name]
            dropped.append(f"{renamed[name]} (one-sided and two-sided relative buckets differ)")
    plan = Transfer(names=carried, stacks=stacks,
                    fresh=[k for k in expected if k not in carried],
                    dropped=dropped + [renamed[k] for k in renamed if k not in expected])
    plan.stated = [f"{k} {getattr(source, k)} -> {getattr(cfg, k)}" for k in STATED_FIELDS
                   if getattr(source, k) != getattr(cfg, k)]
    return plan


def _check_fields(source: ModelConfig, cfg: ModelConfig):
    names = list(MEANING_FIELDS)
    if source.position == cfg.position:
        names += POSITION_FIELDS.get(cfg.position, ())
    differing = [f"{k} {getattr(source, k)!r} -> {getattr(cfg, k)!r}" for k in names
                 if getattr(source, k) != getattr(cfg, k)]
    if differing:
        raise UserError(f"the source's tensors would compute something else under this model config "
                        f"({', '.join(differing)}); drop those model.* settings so the source's values apply")


def _rename(shapes: dict, stacks: dict) -> tuple[dict, list]:
    """({target name: source name}, the source tensors of stacks the target does not take)."""
    source_to_target = {origin: stack for stack, origin in stacks.items()}
    renamed, dropped = {}, []
    for name in shapes:
        stack, _, rest = name.partition(".")
        if stack not in ("encoder", "decoder"):
            renamed[name] = name
        elif stack in source_to_target:
            renamed[f"{source_to_target[stack]}.{rest}"] = name
        else:
            dropped.append(name)
    return renamed, dropped


def _check_depth(renamed: dict, expected: dict, stacks: dict):
    def depth(names, stack):
        return len({m.group(2) for m in map(LAYER.match, names) if m and m.group(1) == stack})

    differing = [f"{stack} {depth(expected, stack)} vs the source's {origin} {depth(renamed, stack)}"
                 for stack, origin in stacks.items() if depth(expected, stack) != depth(renamed, stack)]
    if differing:
        raise UserError(f"the layer counts differ ({', '.join(differing)}); give the new run the source's "
                        f"model.n_layers")


def summary(names: list[str]) -> str:
    """Tensor names with per-layer repeats folded (`encoder.layers.*.ff.up.weight`), a whole stack as `decoder.*`."""
    folded = list(dict.fromkeys(LAYER.sub(lambda m: f"{m.group(1)}.layers.*.", n) for n in names))
    for stack in ("encoder", "decoder"):
        inside = [n for n in folded if n.startswith(f"{stack}.")]
        if len(inside) > 4:
            folded = [n for n in folded if n not in inside[1:]]
            folded[folded.index(inside[0])] = f"{stack}.* ({sum(n.startswith(stack + '.') for n in names)} tensors)"
    return ", ".join(folded) or "none"
