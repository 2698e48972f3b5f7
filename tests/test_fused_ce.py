"""The fused head + cross-entropy must equal logits + F.cross_entropy: value, accuracy and every gradient."""
import pytest
import torch
import torch.nn.functional as F

from models import ModelConfig, Transformer
from models.fused_ce import linear_cross_entropy


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("chunk", [3, 7, 1000])
def test_matches_plain_cross_entropy(with_bias, chunk):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(20, 8, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(11, 8, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(11, generator=g, dtype=torch.float64, requires_grad=True) if with_bias else None
    y = torch.randint(0, 11, (20,), generator=g)
    y[::4] = -100
    loss, correct = linear_cross_entropy(h, w, b, y, chunk_size=chunk)
    (loss * 3).backward()
    grads = [h.grad, w.grad] + ([b.grad] if with_bias else [])
    for t in [h, w] + ([b] if with_bias else []):
        t.grad = None
    logits = F.linear(h, w, b)
    ref = F.cross_entropy(logits, y)
    (ref * 3).backward()
    ref_grads = [h.grad, w.grad] + ([b.grad] if with_bias else [])
    torch.testing.assert_close(loss, ref)
    assert int(correct) == int(((logits.argmax(-1) == y) & (y != -100)).sum())
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want)


def test_confident_logits_fp32():
    """Logits 100+ nats apart (a trained model's): the exp floor that avoids subnormals changes nothing visible."""
    g = torch.Generator().manual_seed(1)
    h = (torch.randn(64, 16, generator=g) * 20).requires_grad_()
    w = torch.randn(300, 16, generator=g).requires_grad_()
    y = torch.randint(0, 300, (64,), generator=g)
    loss, _ = linear_cross_entropy(h, w, None, y, chunk_size=16)
    loss.backward()
    got = loss.detach(), h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    ref = F.cross_entropy(F.linear(h, w), y)
    ref.backward()
    assert float((F.linear(h, w).detach().amax(-1, keepdim=True) - F.linear(h, w).detach()).max()) > 100
    for a, b in zip(got, (ref.detach(), h.grad, w.grad)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # where the label is the argmax the loss is tiny, so a floor that added visible mass would show (float64:
    # a floor of -20 instead of -60 misses by ~1e-7 here)
    h64, w64 = h.detach().double(), w.detach().double()
    best = F.linear(h64, w64).argmax(-1)
    loss64, _ = linear_cross_entropy(h64, w64, None, best, chunk_size=16)
    torch.testing.assert_close(loss64, F.cross_entropy(F.linear(h64, w64), best), rtol=0, atol=1e-12)


@pytest.mark.parametrize("preset", ["bert", "t5"])
def test_model_lm_loss_equals_logits_path(preset):
    extra = {"head_dim": 8, "tie_embeddings": True} if preset == "t5" else {}
    cfg = ModelConfig.preset(preset, d_model=32, n_layers=1, n_heads=4, d_ff=64, vocab_size=40, dropout=0.0,
                             **extra)
    torch.manual_seed(0)
    model = Transformer(cfg)
    hidden = torch.randn(2, 5, 32)
    labels = torch.randint(0, 40, (2, 5))
    fused, _ = model.lm_loss(hidden, labels)
    plain = F.cross_entropy(model.logits(hidden).flatten(0, 1), labels.flatten())
    torch.testing.assert_close(fused, plain)


def _head_grads(model, hidden, labels, dtype, fused, scale=65536.0):
    """Gradients of the hidden states and the (tied) embedding through the LM head under CPU autocast, with a
    GradScaler-style loss scale applied before backward and removed after."""
    model.zero_grad()
    h = hidden.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=dtype):
        if fused:
            loss, _ = model.lm_loss(h, labels)
        else:
            loss = F.cross_entropy(model.logits(h).float(), labels)
    (loss * scale).backward()
    return h.grad.float() / scale, model.tok_emb.weight.grad.float() / scale


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_gradients_equal_the_plain_path(dtype):
    """fp16 (autocast's choice on GPUs without bf16) and bf16 with loss scaling: the fused head gives the plain
    path's gradients. Under fp16 (softmax - onehot) / N mostly lies below fp16's smallest subnormal until the loss
    scale multiplies it; rounded before that, every embedding row that is no target got exactly zero gradient."""
    torch.manual_seed(0)
    n, vocab = 1024, 32768  # 1 / (vocab * n) ~ 3e-8 < 6e-8, fp16's smallest subnormal
    cfg = ModelConfig.preset("gpt2", vocab_size=vocab, d_model=32, n_layers=1, n_heads=2, d_ff=32, max_seq_len=16)
    model = Transformer(cfg)
    hidden, labels = torch.randn(n, 32), torch.randint(0, vocab, (n,))
    ref_h, ref_w = _head_grads(model, hidden, labels, dtype, fused=False)
    got_h, got_w = _head_grads(model, hidden, labels, dtype, fused=True)
    for got, ref in ((got_h, ref_h), (got_w, ref_w)):
        assert float((got - ref).norm() / ref.norm()) < 1e-2
    assert not ((got_w == 0).all(1) & ~(ref_w == 0).all(1)).any()  # no row zeroed that the plain path updates
    assert (~(ref_w == 0).all(1)).sum() > 0.9 * vocab                # (and almost every row has a gradient)


def test_no_gradient_work_without_autograd():
    """Evaluation (torch.no_grad) runs only the logits matmul per chunk: no gradient matmuls, no V x D buffer."""
    from torch.profiler import profile

    torch.manual_seed(0)
    w = torch.randn(300, 16, requires_grad=True)  # a parameter, as the LM head's weight is
    h, y = torch.randn(64, 16), torch.randint(0, 300, (64,))

    def matmuls(grad: bool) -> int:
        with torch.set_grad_enabled(grad), profile() as prof:
            linear_cross_entropy(h, w, None, y, chunk_size=16)
        return sum(e.count for e in prof.key_averages() if e.key in ("aten::mm", "aten::addmm", "aten::addmm_"))

    assert matmuls(False) == 4       # 64 rows / 16 per chunk: one logits matmul each
    assert matmuls(True) == 3 * 4    # logits, grad of hidden, grad of weight


@pytest.mark.parametrize("all_ignored", [False, True])
def test_plain_path_for_compiled_gpu_runs_matches_fused(all_ignored):
    """Transformer.compile() uses plain_linear_cross_entropy for GPU tensors: the same loss, count and gradients."""
    from models.fused_ce import plain_linear_cross_entropy
    g = torch.Generator().manual_seed(1)
    h = torch.randn(24, 8, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(13, 8, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(13, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 13, (24,), generator=g)
    y[::3] = -100
    if all_ignored:
        y[:] = -100
    results = []
    for fn in (lambda: linear_cross_entropy(h, w, b, y, chunk_size=5), lambda: plain_linear_cross_entropy(h, w, b, y)):
        loss, correct = fn()
        (loss * 2).backward()
        results.append((loss.detach(), int(correct), [t.grad.clone() for t in (h, w, b)]))
        for t in (h, w, b):
            t.grad = None
    (fused_loss, fused_correct, fused_grads), (plain_loss, plain_correct, plain_grads) = results
    torch.testing.assert_close(plain_loss, fused_loss)
    assert plain_correct == fused_correct
    for got, want in zip(plain_grads, fused_grads):
        torch.testing.assert_close(got, want)


def test_compile_keeps_the_chunked_loss_on_cpu():
    cfg = ModelConfig(arch="decoder", vocab_size=50, d_model=16, n_heads=2, n_layers=1, d_ff=32, max_seq_len=8)
    model = Transformer(cfg)
    model.compile()
    assert model.compiled_ce is not None

    def refuse(*_):
        raise AssertionError("the compiled whole-logits loss ran on CPU")
    model.compiled_ce = refuse
    hidden = torch.randn(2, 8, 16)
    loss, _ = model.lm_loss(hidden, torch.randint(0, 50, (2, 8)))
    assert torch.isfinite(loss)
