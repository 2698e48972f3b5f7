"""ELECTRA against transformers, both directions, fp32, < 1e-4: the discriminator (the run's model, preset electra)
is ElectraForPreTraining; the generator (the objective's own parameters, reading the discriminator's embeddings)
is ElectraForMaskedLM, with electra.embeddings_project when it is narrower than the embeddings."""
import pytest
import torch

from models import ModelConfig, Transformer
from models.convert import from_transformers, match_family, to_transformers
from objectives.electra_generator import Generator, from_transformers_state, generator_config
from objectives.electra_generator import to_transformers as generator_to_transformers

V, T, TOL = 97, 12, 1e-4
LENGTHS = [T, 9, 5]


def perturb(*modules):
    """Norm gains start at one and biases at zero: randomize them so a misplaced one shows; weights x 10 (std 0.2)
    so that logits are large enough for a wrong activation or a missing transform to show above 1e-4."""
    with torch.no_grad():
        for module in modules:
            for p in module.parameters():
                if p.ndim == 1:
                    p.add_(torch.randn_like(p) * 0.1)
                else:  # parameters() yields a tied weight once
                    p.mul_(10)


def batch():
    g = torch.Generator().manual_seed(1)
    mask = (torch.arange(T)[None, :] < torch.tensor(LENGTHS)[:, None]).long()
    ids = torch.randint(3, V, (3, T), generator=g).masked_fill(mask == 0, 0)
    types = (torch.arange(T)[None, :] >= 4).long().expand(3, T).contiguous()
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=types), mask.bool()


def ours(model, gen, inputs):
    with torch.no_grad():
        disc = model.logits(model(**inputs)).squeeze(-1)
        return disc, gen(model, **inputs)


def hf_pair(width: int):
    import transformers as tf

    torch.manual_seed(0)
    common = dict(vocab_size=V, embedding_size=64, num_hidden_layers=2, max_position_embeddings=32, pad_token_id=0)
    disc = tf.ElectraForPreTraining(tf.ElectraConfig(hidden_size=64, num_attention_heads=4, intermediate_size=128,
                                                     **common))
    gen = tf.ElectraForMaskedLM(tf.ElectraConfig(hidden_size=width, num_attention_heads=max(1, width // 64),
                                                 intermediate_size=4 * width, **common))
    perturb(disc, gen)
    gen.electra.embeddings.load_state_dict(disc.electra.embeddings.state_dict())  # shared, as ELECTRA trains them
    return disc.eval(), gen.eval()


@pytest.mark.parametrize("size", [0.25, 1.0], ids=["projected", "same-width"])
def test_import_parity(size):
    disc, hf_gen = hf_pair(int(64 * size))
    model = from_transformers(disc)
    assert match_family(model.config) == ("electra", [])
    gen = Generator(model.config, generator_config(model.config, size, 1.0)).eval()
    own, shared = from_transformers_state(hf_gen.state_dict(), gen)
    gen.load_state_dict(own, strict=True)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in shared.items())  # the generator's embeddings are the model's
    inputs, real = batch()
    disc_ours, gen_ours = ours(model, gen, inputs)
    with torch.no_grad():
        disc_hf, gen_hf = disc(**inputs).logits, hf_gen(**inputs).logits
    d_disc, d_gen = (disc_ours - disc_hf)[real].abs().max().item(), (gen_ours - gen_hf)[real].abs().max().item()
    print(f"import {size}: discriminator {d_disc:.1e}, generator {d_gen:.1e}")
    assert d_disc < TOL and d_gen < TOL
    assert (gen.project is None) == (size == 1.0)


@pytest.mark.parametrize("size", [0.25, 1.0], ids=["projected", "same-width"])
def test_export_parity_and_round_trip(size, tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig.preset("electra", vocab_size=V, d_model=64, n_layers=2, n_heads=4, d_ff=128, max_seq_len=32,
                             dropout=0.0)
    model, gen = Transformer(cfg).eval(), Generator(cfg, generator_config(cfg, size, 1.0)).eval()
    perturb(model, gen)
    disc_hf, gen_hf = to_transformers(model, "electra"), generator_to_transformers(model, gen)
    assert type(disc_hf).__name__ == "ElectraForPreTraining" and type(gen_hf).__name__ == "ElectraForMaskedLM"
    assert hasattr(gen_hf.electra, "embeddings_project") == (size != 1.0)
    assert gen_hf.config.embedding_size == 64 and gen_hf.config.hidden_size == int(64 * size)
    assert gen_hf.generator_lm_head.weight.data_ptr() == gen_hf.electra.embeddings.word_embeddings.weight.data_ptr()
    inputs, real = batch()
    disc_ours, gen_ours = ours(model, gen, inputs)
    with torch.no_grad():
        d_disc = (disc_hf(**inputs).logits - disc_ours)[real].abs().max().item()
        d_gen = (gen_hf(**inputs).logits - gen_ours)[real].abs().max().item()
    print(f"export {size}: discriminator {d_disc:.1e}, generator {d_gen:.1e}")
    assert d_disc < TOL and d_gen < TOL
    # and back through save_pretrained: the same weights
    disc_hf.save_pretrained(tmp_path / "d")
    gen_hf.save_pretrained(tmp_path / "g")
    assert torch.equal(from_transformers(tmp_path / "d").state_dict()["head.weight"], model.head.weight)
    from transformers import ElectraForMaskedLM

    own, _ = from_transformers_state(ElectraForMaskedLM.from_pretrained(tmp_path / "g").state_dict(), gen)
    assert all(torch.equal(own[k], v) for k, v in gen.state_dict().items())


def test_a_generator_folder_is_not_imported_as_the_model(tmp_path):
    _, gen = hf_pair(16)
    gen.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="ElectraForMaskedLM.*import the discriminator"):
        from_transformers(tmp_path)
