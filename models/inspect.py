"""Attention weights for inspection. SDPA returns none, so the chosen layer switches to the explicit softmax path
for one forward pass; training never takes this path."""
import torch


@torch.no_grad()
def attention_weights(model, input_ids, decoder_input_ids=None, layer: int = -1) -> dict:
    """One layer's attention of a single sequence: {"encoder self" | "decoder self" | "decoder cross": [H, Tq, Tk]}.
    `layer` indexes each stack's layers (negative counts from the end)."""
    picked = {}
    for stack, index, kind, module in model.attention_modules():
        n = len(getattr(model, stack).layers)
        if index == layer % n:
            picked[f"{stack} {kind}"] = module
    was_training = model.training
    model.eval()
    try:
        for module in picked.values():
            module.record_weights = True
        if decoder_input_ids is not None:
            model(input_ids, decoder_input_ids=decoder_input_ids)
        elif model.config.arch == "encoder-decoder":
            model.encode(input_ids)
        else:
            model(input_ids)
        return {name: module.last_weights[0].float().cpu() for name, module in picked.items()
                if module.last_weights is not None}
    finally:
        for module in picked.values():
            module.record_weights, module.last_weights = False, None
        model.train(was_training)
