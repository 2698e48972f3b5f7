"""LM-head projection fused with cross-entropy, computed in row chunks.

The [tokens, vocab] logits of a language model are its largest activation. Computing them chunk by chunk, and the
gradient of each chunk right away (softmax - one-hot), means the full logits never exist, the separate log-softmax
backward pass disappears, and memory stays flat in the vocabulary size. The matmuls are the same three as the plain
path (logits, grad of hidden, grad of weight)."""
import torch

EXP_FLOOR = -60.0  # e^-60 ~ 1e-26: still a normal float after the gradient's 1 / (sum * tokens) scaling


class LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk_size):
        valid = labels != -100
        n_valid = valid.sum().clamp(min=1)
        need_grad = hidden.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
        compute_dtype = torch.get_autocast_dtype(hidden.device.type) \
            if torch.is_autocast_enabled(hidden.device.type) else weight.dtype
        w = weight.to(compute_dtype)
        acc = torch.promote_types(compute_dtype, torch.float32)  # softmax and sums in at least fp32
        grad_hidden = torch.empty_like(hidden) if need_grad else None
        grad_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_grad else None
        grad_bias = torch.zeros(weight.shape[0], dtype=acc, device=weight.device) \
            if need_grad and bias is not None else None
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
            logits = logits_buf[:len(y)]
            if low_buf is None:
                torch.mm(h, w.t(), out=logits)
            else:
                logits.copy_(torch.mm(h, w.t(), out=low_buf[:len(y)]))
            if bias is not None:
                logits += bias.to(acc)
            target = y.clamp(min=0)
            picked = logits.gather(1, target[:, None]).squeeze(1)
            row_max = logits.amax(dim=-1)  # the label is the argmax iff its logit reaches the max (amax: 5x max())
            # in place: the chunk's logits become exp(logit - max). The floor keeps exp() out of the subnormal range,
            # where x86 runs 15-25x slower; the probability mass it adds (vocab * e^-60 < 1e-21) is below fp32's eps.
            probs = logits.sub_(row_max[:, None]).clamp_(min=EXP_FLOOR).exp_()
            total = probs.sum(dim=-1)
            loss_sum += ((row_max + total.log() - picked) * m).sum()
            correct += ((picked >= row_max) & m).sum()
            if need_grad:  # d loss / d logits = (softmax - onehot) / n_valid on valid rows
                probs *= (m.to(acc) / (total * n_valid))[:, None]
                probs[torch.arange(len(y), device=y.device), target] -= m.to(acc) / n_valid
                p = probs if low_buf is None else low_buf[:len(y)].copy_(probs)
                if hidden.dtype == compute_dtype:
                    torch.mm(p, w, out=grad_hidden[start:start + chunk_size])
                else:
                    grad_hidden[start:start + chunk_size] = (p @ w).to(hidden.dtype)
                if compute_dtype == acc:
                    grad_weight.addmm_(p.t(), h)
                else:
                    grad_weight += (p.t() @ h).to(acc)
                if grad_bias is not None:
                    grad_bias += probs.sum(dim=0)
        if need_grad:
            ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype),
                                  grad_bias.to(bias.dtype) if grad_bias is not None else None)
        ctx.mark_non_differentiable(correct)
        return loss_sum / n_valid, correct

    @staticmethod
    def backward(ctx, grad_loss, _grad_correct):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        return (grad_hidden * grad_loss, grad_weight * grad_loss,
                grad_bias * grad_loss if grad_bias is not None else None, None, None)


def linear_cross_entropy(hidden, weight, bias, labels, chunk_size: int | None = None):
    """Mean cross-entropy of (hidden @ weight.T + bias) against labels (-100 ignored), and the count of correct
    argmax predictions. hidden: [N, D], labels: [N]."""
    if chunk_size is None:  # about 32 MB of fp32 logits per chunk
        chunk_size = max(128, 2 ** 23 // weight.shape[0])
    return LinearCrossEntropy.apply(hidden, weight, bias, labels, chunk_size)
