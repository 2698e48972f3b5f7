"""LM-head projection fused with cross-entropy, computed in row chunks.

The [tokens, vocab] logits of a language model are its largest activation. Computing them chunk by chunk, and the
gradient of each chunk right away (softmax - one-hot), means the full logits never exist, the separate log-softmax
backward pass disappears, and memory stays flat in the vocabulary size. The matmuls are the same three as the plain
path (logits, grad of hidden, grad of weight).

fp16 is the exception. There the per-token gradient (softmax - one-hot) / N mostly lies below fp16's smallest
subnormal until the loss scale (GradScaler's, ~2^16) multiplies it, and that scale only arrives in the backward
pass. So under fp16 the forward keeps each row's log-sum-exp and the backward recomputes the chunk's logits,
forms the gradient in fp32 already multiplied by the incoming (scaled) gradient, and only then rounds it to fp16:
one matmul more, the same numbers as the plain path. fp32 and bf16 (fp32's exponent range) keep the fused path.
Without autograd (evaluation) no gradient is computed at all.
"""
import torch
import torch.nn.functional as F

# fp32 logits per chunk: ~32 MB on CPU (cache-sized chunks, one reused buffer); ~1 GB on a GPU, where small chunks
# leave the matmuls too thin to fill the device and the loop's kernel launches dominate (benchmarks/lm_head_loss.py)
CHUNK_ELEMENTS = {"cpu": 2 ** 23, "cuda": 2 ** 28}
EXP_FLOOR = -60.0  # e^-60 ~ 1e-26: still a normal float after the gradient's 1 / (sum * tokens) scaling


def _compute_dtype(hidden, weight):
    if torch.is_autocast_enabled(hidden.device.type):
        return torch.get_autocast_dtype(hidden.device.type)
    return weight.dtype


def _chunk_logits(h, w, bias, logits, low_buf):
    """logits[:] = h @ w.T (+ bias) in the accumulation dtype, the matmul in the compute dtype."""
    if low_buf is None:
        torch.mm(h, w.t(), out=logits)
    else:
        logits.copy_(torch.mm(h, w.t(), out=low_buf))
    if bias is not None:
        logits += bias.to(logits.dtype)
    return logits


class LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk_size, need_grad):
        valid = labels != -100
        n_valid = valid.sum().clamp(min=1)
        compute_dtype = _compute_dtype(hidden, weight)
        in_backward = need_grad and compute_dtype == torch.float16  # see the module docstring
        now = need_grad and not in_backward
        w = weight.to(compute_dtype)
        acc = torch.promote_types(compute_dtype, torch.float32)  # softmax and sums in at least fp32
        grad_hidden = torch.empty_like(hidden) if now else None
        grad_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device) if now else None
        grad_bias = torch.zeros(weight.shape[0], dtype=acc, device=weight.device) \
            if now and bias is not None else None
        log_norm = torch.empty(hidden.shape[0], dtype=acc, device=hidden.device) if in_backward else None
        loss_sum = torch.zeros((), dtype=acc, device=hidden.device)
        correct = torch.zeros((), dtype=torch.long, device=hidden.device)
        # one logits buffer for every chunk: a fresh 16-32 MB tensor per chunk costs its page faults each time on CPU
        rows = min(chunk_size, hidden.shape[0])
        logits_buf = torch.empty(rows, weight.shape[0], dtype=acc, device=hidden.device)
        low_buf = torch.empty(rows, weight.shape[0], dtype=compute_dtype, device=hidden.device) \
            if compute_dtype != acc else None
        for start in range(0, hidden.shape[0], chunk_size):
            h = hidden[start:start + chunk_size].to(compute_dtype)
            y, m = labels[start:start + chunk_size], valid[start:start + chunk_size]
            logits = _chunk_logits(h, w, bias, logits_buf[:len(y)], low_buf[:len(y)] if low_buf is not None else None)
            target = y.clamp(min=0)
            picked = logits.gather(1, target[:, None]).squeeze(1)
            row_max = logits.amax(dim=-1)  # the label is the argmax iff its logit reaches the max (amax: 5x max())
            # in place: the chunk's logits become exp(logit - max). The floor keeps exp() out of the subnormal range,
            # where x86 runs 15-25x slower; the probability mass it adds (vocab * e^-60 < 1e-21) is below fp32's eps.
            probs = logits.sub_(row_max[:, None]).clamp_(min=EXP_FLOOR).exp_()
            total = probs.sum(dim=-1)
            loss_sum += ((row_max + total.log() - picked) * m).sum()
            correct += ((picked >= row_max) & m).sum()
            if in_backward:
                log_norm[start:start + chunk_size] = row_max + total.log()
            if now:  # d loss / d logits = (softmax - onehot) / n_valid on valid rows
                probs *= (m.to(acc) / (total * n_valid))[:, None]
                probs[torch.arange(len(y), device=y.device), target] -= m.to(acc) / n_valid
                _accumulate(probs, h, w, low_buf, start, chunk_size, grad_hidden, grad_weight, grad_bias, hidden.dtype)
        if now:
            ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype),
                                  grad_bias.to(bias.dtype) if grad_bias is not None else None)
        elif in_backward:
            ctx.save_for_backward(hidden, weight, bias, labels, log_norm)
        ctx.in_backward, ctx.chunk_size, ctx.compute_dtype = in_backward, chunk_size, compute_dtype
        ctx.mark_non_differentiable(correct)
        return loss_sum / n_valid, correct

    @staticmethod
    def backward(ctx, grad_loss, _grad_correct):
        if ctx.in_backward:
            return (*_recompute_gradients(ctx, grad_loss), None, None, None)
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        return (grad_hidden * grad_loss, grad_weight * grad_loss,
                grad_bias * grad_loss if grad_bias is not None else None, None, None, None)


def _accumulate(probs, h, w, low_buf, start, chunk_size, grad_hidden, grad_weight, grad_bias, hidden_dtype):
    """The chunk's share of the three gradients, from its d loss / d logits (`probs`, accumulation dtype)."""
    acc = probs.dtype
    p = probs if low_buf is None else low_buf[:len(probs)].copy_(probs)
    if hidden_dtype == p.dtype:
        torch.mm(p, w, out=grad_hidden[start:start + chunk_size])
    else:
        grad_hidden[start:start + chunk_size] = (p @ w).to(hidden_dtype)
    if p.dtype == acc:
        grad_weight.addmm_(p.t(), h)
    else:
        grad_weight += (p.t() @ h).to(acc)
    if grad_bias is not None:
        grad_bias += probs.sum(dim=0)


def _recompute_gradients(ctx, grad_loss):
    """fp16: the chunk's logits again, the gradient formed in fp32 times the incoming gradient, then rounded."""
    hidden, weight, bias, labels, log_norm = ctx.saved_tensors
    compute_dtype, chunk_size = ctx.compute_dtype, ctx.chunk_size
    valid = labels != -100
    scale = grad_loss.float() / valid.sum().clamp(min=1)
    w = weight.to(compute_dtype)
    grad_hidden = torch.empty_like(hidden)
    grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
    grad_bias = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if bias is not None else None
    rows = min(chunk_size, hidden.shape[0])
    logits_buf = torch.empty(rows, weight.shape[0], dtype=torch.float32, device=hidden.device)
    low_buf = torch.empty(rows, weight.shape[0], dtype=compute_dtype, device=hidden.device)
    for start in range(0, hidden.shape[0], chunk_size):
        h = hidden[start:start + chunk_size].to(compute_dtype)
        y, m = labels[start:start + chunk_size], valid[start:start + chunk_size]
        logits = _chunk_logits(h, w, bias, logits_buf[:len(y)], low_buf[:len(y)])
        probs = logits.sub_(log_norm[start:start + chunk_size, None]).clamp_(min=EXP_FLOOR).exp_()
        probs[torch.arange(len(y), device=y.device), y.clamp(min=0)] -= 1.0
        probs *= (m.float() * scale)[:, None]
        _accumulate(probs, h, w, low_buf, start, chunk_size, grad_hidden, grad_weight, grad_bias, hidden.dtype)
    return grad_hidden, grad_weight.to(weight.dtype), grad_bias.to(bias.dtype) if bias is not None else None


def linear_cross_entropy(hidden, weight, bias, labels, chunk_size: int | None = None):
    """Mean cross-entropy of (hidden @ weight.T + bias) against labels (-100 ignored), and the count of correct
    argmax predictions. hidden: [N, D], labels: [N]."""
    if chunk_size is None:
        chunk_size = max(128, CHUNK_ELEMENTS.get(hidden.device.type, CHUNK_ELEMENTS["cpu"]) // weight.shape[0])
    # decided here: inside Function.forward autograd is always off
    need_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (hidden, weight, bias))
    return LinearCrossEntropy.apply(hidden, weight, bias, labels, chunk_size, need_grad)


def plain_linear_cross_entropy(hidden, weight, bias, labels):
    """The same loss and count over the full logits, for torch.compile to fuse on a GPU (Transformer.compile):
    there one fused pass beats the chunked loop; eager, or on CPU, linear_cross_entropy is faster and leaner."""
    logits = F.linear(hidden, weight, bias)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    valid = labels != -100
    loss = F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum") / valid.sum().clamp(min=1)
    picked = logits.gather(1, labels.clamp(min=0)[:, None]).squeeze(1)
    return loss, ((picked >= logits.amax(dim=-1)) & valid).sum()
