"""ELECTRA replaced-token detection against google-research/electra's settings: 15% of non-special tokens
selected, 85% of them [MASK] and 15% unchanged (no random tokens); samples drawn from the generator's softmax with
no gradient through them; discriminator positives exactly where the sample differs from the original; loss =
generator MLM loss + 50 x discriminator loss; the generator answers the cloze; wrong models refused in one line."""
import math

import pytest
import torch
import torch.nn.functional as F
from objectives_fixtures import model_config, padded_blocks, random_blocks, text_blocks, wordpiece

from models import Transformer
from models.errors import UserError
from objectives import build_objective
from objectives.electra import auc, sample

pytestmark = pytest.mark.usefixtures("one_thread")


def setup(**options):
    tok = wordpiece()
    cfg = model_config("electra", tok, d_model=64, n_heads=4)
    torch.manual_seed(0)
    return tok, build_objective("electra", tok, cfg, **options), Transformer(cfg)


def test_masking_rate_and_the_85_15_split():
    tok, obj, _ = setup()
    blocks = random_blocks(tok, 64, 1024, special_rate=0.0)
    batch = obj.collate(blocks, torch.Generator().manual_seed(0))
    selected, inputs = batch["labels"] != -100, batch["input_ids"]
    n = selected.sum().item()
    assert abs(selected.float().mean().item() - 0.15) < 0.005  # 65k tokens: 3 sigma = 0.004
    assert abs(((inputs == tok.mask_token_id) & selected).sum().item() / n - 0.85) < 0.01
    kept = selected & (inputs != tok.mask_token_id)
    assert torch.equal(inputs[kept], blocks[kept])
    assert torch.equal(inputs[~selected], blocks[~selected])  # nothing else touched: no random tokens anywhere
    assert torch.equal(batch["labels"][selected], blocks[selected])
    assert batch["sample_u"].shape == blocks.shape and 0 <= batch["sample_u"].min() and batch["sample_u"].max() < 1


def test_special_tokens_never_selected():
    tok, obj, _ = setup()
    blocks = random_blocks(tok, 16, 512, special_rate=0.3)
    batch = obj.collate(blocks, torch.Generator().manual_seed(1))
    special = torch.isin(blocks, torch.tensor(tok.all_special_ids))
    assert not ((batch["labels"] != -100) & special).any()


def test_sampling_follows_the_generators_softmax():
    logits = torch.tensor([[2.0, 0.0, -1.0, 1.0, -30.0]]).expand(200_000, 5)
    draws = sample(logits, torch.rand(200_000, generator=torch.Generator().manual_seed(0)))
    freq = torch.bincount(draws, minlength=5).float() / len(draws)
    assert (freq - logits[0].softmax(-1)).abs().max() < 0.004  # 3 sigma of the largest class ~ 0.0034
    assert freq[4] == 0


def peaked_generator(obj, token: int, p: float):
    """Make the generator's softmax independent of its input: p on `token`, the rest uniform."""
    gen = obj.module
    with torch.no_grad():
        gen.head_dense.weight.zero_(), gen.head_dense.bias.zero_(), gen.head_norm.bias.zero_()
        V = gen.head_bias.numel()
        gen.head_bias.copy_(torch.full((V,), math.log((1 - p) / (V - 1))))
        gen.head_bias[token] = math.log(p)


def test_discriminator_positives_are_exactly_the_changed_tokens():
    """Every row is one repeated token t; the generator samples t with p = 0.6. So 40% of the selected are
    replaced, 6% of all tokens; counting every selected position as replaced (a classic mistake) gives 15%."""
    tok, obj, model = setup()
    t = 60  # an ordinary (non-special) token
    peaked_generator(obj, t, 0.6)
    blocks = torch.full((128, 128), t)
    batch = obj.collate(blocks, torch.Generator().manual_seed(2))
    with torch.no_grad():
        step = obj.forward(model, batch)
        _, metrics = obj.loss(model, batch)
    assert torch.equal(step.original, blocks)
    assert torch.equal(step.corrupted[~step.selected], blocks[~step.selected])
    assert torch.equal(step.replaced, step.corrupted != blocks)
    n_sel = step.selected.sum().item()
    share = step.replaced[step.selected].float().mean().item()
    assert abs(share - 0.4) < 3 * math.sqrt(0.24 / n_sel) + 1e-3
    assert metrics["replaced_fraction"].item() == pytest.approx(step.replaced.float().mean().item())
    assert abs(metrics["replaced_fraction"].item() - 0.06) < 0.005


def test_no_gradient_through_the_sampling():
    """The discriminator's loss reaches the generator only through the shared embeddings (the model's own
    parameters), never through the sampled tokens."""
    tok, obj, model = setup()
    batch = obj.collate(text_blocks(tok, 4, 64), torch.Generator().manual_seed(3))
    step = obj.forward(model, batch)
    step.disc_loss.backward()
    own = [p.grad for p in obj.module.parameters()]
    assert all(g is None or not g.any() for g in own)
    assert model.tok_emb.weight.grad.abs().sum() > 0  # the discriminator does train the shared embeddings
    obj.module.zero_grad(), model.zero_grad()
    obj.forward(model, batch).gen_loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in obj.module.named_parameters()
               if not n.startswith("encoder.layers.0.self_attn.qkv.bias"))


@pytest.mark.parametrize("weight", [50.0, 7.0])
def test_loss_is_generator_plus_lambda_discriminator(weight):
    tok, obj, model = setup(**({} if weight == 50.0 else {"disc_weight": weight}))
    blocks = padded_blocks(tok, 4, 64, real=40)
    batch = obj.collate(blocks, torch.Generator().manual_seed(4))
    loss, metrics = obj.loss(model, batch)
    step = obj.forward(model, batch)  # deterministic: dropout 0, samples from the batch's uniforms
    sel = batch["labels"] != -100
    gen = obj.module
    hidden = gen.hidden(model, batch["input_ids"], batch["attention_mask"])
    ref_gen = F.cross_entropy(gen.logits(model, hidden[sel]), batch["labels"][sel])
    real = batch["attention_mask"].bool()
    disc = model.logits(model(step.corrupted, attention_mask=batch["attention_mask"])).squeeze(-1)
    ref_disc = F.binary_cross_entropy_with_logits(disc[real], step.replaced[real].float())
    assert metrics["gen_loss"].item() == pytest.approx(ref_gen.item(), rel=1e-5)
    assert metrics["disc_loss"].item() == pytest.approx(ref_disc.item(), rel=1e-5)
    assert loss.item() == pytest.approx(ref_gen.item() + weight * ref_disc.item(), rel=1e-5)
    assert metrics["n_predicted"].item() == real.sum().item() == 3 * 64 + 40  # every real token, no padding
    assert not (sel & ~real).any() and not step.replaced[~real].any()


def test_auc_matches_pairwise_counting():
    g = torch.Generator().manual_seed(5)
    truth = torch.rand(300, generator=g) < 0.2
    scores = torch.randn(300, generator=g) + truth.float()
    pairs = (scores[truth][:, None] > scores[~truth][None, :]).float().mean()
    assert auc(scores, truth).item() == pytest.approx(pairs.item(), abs=1e-6)
    assert auc(scores, torch.zeros(300, dtype=torch.bool)).item() == 0.5
    tied = (scores * 2).round() / 2  # heavy ties, as bf16 logits have: a tie counts half
    greater = (tied[truth][:, None] > tied[~truth][None, :]).float()
    equal = (tied[truth][:, None] == tied[~truth][None, :]).float()
    assert auc(tied, truth).item() == pytest.approx((greater + equal / 2).mean().item(), abs=1e-6)
    assert auc(torch.zeros(300), truth).item() == 0.5


def test_it_trains_and_the_discriminator_learns():
    tok, obj, model = setup()
    batch = obj.collate(text_blocks(tok, 8, 64), torch.Generator().manual_seed(6))
    params = list(model.parameters()) + list(obj.module.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3)
    first = None
    for _ in range(25):
        loss, metrics = obj.loss(model, batch)
        first = first or metrics
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert metrics["gen_loss"] < first["gen_loss"] and metrics["disc_loss"] < first["disc_loss"]
    assert metrics["disc_auc"] > 0.75 and metrics["gen_accuracy"] > first["gen_accuracy"]


def test_generator_sizes_follow_the_reference():
    tok = wordpiece()
    cfg = model_config("electra", tok, d_model=256, n_heads=4, n_layers=2)
    gen = build_objective("electra", tok, cfg).module.cfg
    assert (gen.d_model, gen.n_heads, gen.d_ff, gen.n_layers, gen.position) == (64, 1, 256, 2, "none")
    gen = build_objective("electra", tok, cfg, generator_size=0.5, generator_layers=0.5).module.cfg
    assert (gen.d_model, gen.n_heads, gen.d_ff, gen.n_layers) == (128, 2, 512, 1)


def test_the_generator_answers_the_cloze():
    tok, obj, model = setup()
    windows = text_blocks(tok, 3, 20).tolist()
    logits = obj.cloze_logits(model, windows, [5, 9, 12], "both")
    masked = torch.tensor(windows)
    masked[[0, 1, 2], [5, 9, 12]] = tok.mask_token_id
    with torch.no_grad():
        expected = obj.module.logits(model, obj.module.hidden(model, masked)[[0, 1, 2], [5, 9, 12]])
    assert logits.shape == (3, len(tok)) and torch.allclose(logits, expected)
    assert "generator" in obj.cloze_method and "generator" in obj.cloze_note


def test_wrong_models_and_options_refused_in_one_line():
    tok = wordpiece()
    with pytest.raises(UserError, match="model.preset electra") as err:
        build_objective("electra", tok, model_config("bert", tok))
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="objective electra for this model"):
        build_objective("mlm", tok, model_config("electra", tok))
    cfg = model_config("electra", tok)
    for bad, what in (({"disc_weight": 0.0}, "disc_weight"), ({"generator_size": 1.5}, "generator_size"),
                      ({"mask_replace": 1.2}, "objective 'electra': mask_replace")):
        with pytest.raises(UserError, match=what):
            build_objective("electra", tok, cfg, **bad)


def test_the_generators_flops_are_counted():
    """The generator's training FLOPs (6 x multiply-adds per token) beside the model's, written out by hand for
    width 16 beside d_model 64, one layer, rows of 64: layers 12 w^2, attention scores 2 x 64 x w, projection
    d x w per token; the head (w x d + d x V) on the expected 15% of the tokens."""
    tok, obj, _ = setup()
    batch = obj.collate(text_blocks(tok, 4, 64), torch.Generator().manual_seed(7))
    w, d, V, tokens = 16, 64, len(tok), 4 * 64
    per_token = 6 * 12 * w * w + 12 * 64 * w + 6 * d * w
    head = 6 * (w * d + d * V) * 0.15 * tokens
    assert obj.own_flops(batch) == pytest.approx(per_token * tokens + head)


def test_the_generator_stays_inside_each_document_under_document_masking():
    """With objective.document_masking the generator, like the discriminator, never reads another packed document:
    changing the second document's tokens leaves the generator's logits on the first document unchanged (and
    without document masking they do change, so the test can see a leak)."""
    tok = wordpiece()
    cfg = model_config("electra", tok, d_model=64, n_heads=4)
    ordinary = [v for v in range(len(tok)) if v not in set(tok.all_special_ids)]
    g = torch.Generator().manual_seed(3)
    first = torch.tensor(ordinary)[torch.randint(len(ordinary), (1, 15), generator=g)]
    second = torch.tensor(ordinary)[torch.randint(len(ordinary), (2, 16), generator=g)]
    eos = torch.tensor([[tok.eos_token_id]])
    blocks = [torch.cat([first, eos, s[None]], 1) for s in second]  # two blocks: same first document, other second

    def first_document_logits(documents: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        obj = build_objective("electra", tok, cfg, documents=documents)
        model = Transformer(cfg).eval()
        out = []
        for block in blocks:
            batch = obj.collate(block, torch.Generator().manual_seed(0))
            batch["labels"] = torch.where(torch.isin(block, torch.tensor(tok.all_special_ids)), -100, block)
            selected = batch["labels"] != -100
            with torch.no_grad():
                step = obj.forward(model, batch)
            out.append(step.gen_logits[: int(selected[0, :15].sum())])  # row-major: the first document's come first
        return out

    masked = first_document_logits(True)
    assert torch.allclose(masked[0], masked[1], atol=1e-6, rtol=0)
    unmasked = first_document_logits(False)
    assert not torch.allclose(unmasked[0], unmasked[1], atol=1e-6, rtol=0)
