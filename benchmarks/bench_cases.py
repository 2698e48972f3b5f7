"""The benchmark cases: our preset + objective and the equivalent `transformers` class, same sizes, same batch."""
import torch
from tokenizers import Tokenizer, models
from transformers import (BartConfig, BartForConditionalGeneration, BertConfig, BertForMaskedLM, GPT2Config,
                          GPT2LMHeadModel, PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration)

from models import ModelConfig, Transformer
from objectives import build_objective
from pretrain.train.hardware import cpu_has_native_bf16, measured_matmul_flops

SIZES = {
    "small": dict(vocab=16384, d=256, layers=4, heads=4, ff=1024, seq=128, batch=16),
    "medium": dict(vocab=32768, d=512, layers=8, heads=8, ff=2048, seq=512, batch=8),
    # GPT-2 124M (nanoGPT's padded vocabulary) and, for BERT, BERT-base at sequence 128: the GPU check's sizes
    "base": dict(vocab=50304, d=768, layers=12, heads=12, ff=3072, seq=1024, batch=16),
}
FAMILY_SIZES = {  # at "base", each family's own base model (the GPU check)
    ("bert", "base"): dict(vocab=30522, seq=128, batch=128),
    ("bart", "base"): dict(vocab=50265, layers=6, seq=1024, batch=16),  # facebook/bart-base: 6 + 6 layers
    ("t5", "base"): dict(vocab=32128, ff=2048, seq=512, batch=32),  # google/t5-v1_1-base: gated d_ff 2048
    ("modernbert", "base"): dict(vocab=50368, layers=22, ff=1152, seq=1024, batch=32),  # answerdotai/ModernBERT-base
}
FAMILIES = {"bert": ("mlm", "BERT+MLM"), "gpt2": ("clm", "GPT-2+CLM"), "bart": ("infill", "BART+infill"),
            "t5": ("span", "T5+span"), "modernbert": ("mlm", "ModernBERT+MLM"),
            "modernbert_decoder": ("clm", "MB-decoder+CLM")}
SPECIALS = ["<pad>", "</s>", "<s>", "<unk>", "<mask>"] + [f"<extra_id_{i}>" for i in range(100)]


def measure_matmul_tflops(dtype: str, device: str) -> float:
    """This machine's dense matmul rate (best of several products), the denominator of MFU: the trainer's probe."""
    emulated = device == "cpu" and dtype == "bf16" and not cpu_has_native_bf16()
    return measured_matmul_flops(device, dtype, n=256 if emulated else 2048) / 1e12


def synthetic_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    vocab.update({f"w{i}": i for i in range(len(SPECIALS), vocab_size)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", bos_token="<s>",
                                   unk_token="<unk>", mask_token="<mask>", additional_special_tokens=SPECIALS[5:])


def reference_model(family, s, cfg):
    common = dict(vocab_size=s["vocab"])
    if family.startswith("modernbert"):  # the same config through our export; MLM with its sparse prediction
        import transformers

        from models.convert import hf_classes, to_hf_config

        hf_cfg = to_hf_config(family, cfg)
        hf_cfg.sparse_prediction = True
        return getattr(transformers, hf_classes()[family])(hf_cfg)
    if family == "bert":
        return BertForMaskedLM(BertConfig(**common, hidden_size=s["d"], num_hidden_layers=s["layers"],
                                          num_attention_heads=s["heads"], intermediate_size=s["ff"],
                                          max_position_embeddings=s["seq"],
                                          attention_probs_dropout_prob=cfg.attention_dropout_rate))
    if family == "gpt2":
        return GPT2LMHeadModel(GPT2Config(**common, n_embd=s["d"], n_layer=s["layers"], n_head=s["heads"],
                                          n_inner=s["ff"], n_positions=s["seq"], bos_token_id=cfg.bos_token_id,
                                          eos_token_id=cfg.eos_token_id, attn_pdrop=cfg.attention_dropout_rate))
    if family == "bart":
        return BartForConditionalGeneration(BartConfig(
            **common, d_model=s["d"], encoder_layers=s["layers"], decoder_layers=s["layers"],
            encoder_attention_heads=s["heads"], decoder_attention_heads=s["heads"], encoder_ffn_dim=s["ff"],
            decoder_ffn_dim=s["ff"], max_position_embeddings=s["seq"] + 8, attention_dropout=cfg.attention_dropout_rate,
            pad_token_id=cfg.pad_token_id, bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id,
            decoder_start_token_id=cfg.decoder_start_token_id))
    return T5ForConditionalGeneration(T5Config(
        **common, d_model=s["d"], d_kv=s["d"] // s["heads"], d_ff=s["ff"], num_layers=s["layers"],
        num_decoder_layers=s["layers"], num_heads=s["heads"], feed_forward_proj="gated-gelu",
        tie_word_embeddings=False, pad_token_id=cfg.pad_token_id, eos_token_id=cfg.eos_token_id,
        decoder_start_token_id=cfg.decoder_start_token_id))


def build_case(family: str, size: str, device: str, sides=("ours", "theirs"), documents: bool = False,
               kernel: str = "sdpa", attention_dropout: float | None = None) -> dict:
    """Both implementations on the same batch; `sides` limits which models are built (peak-memory runs).
    documents: ours keeps attention inside the packed documents (transformers' classes cannot; theirs is the same
    reference either way, so the two rows' ratios show what the mask costs). kernel: ours computes document masks
    with SDPA or FlexAttention (models/flex.py). attention_dropout: both sides (None: the preset's)."""
    s = {**SIZES[size], **FAMILY_SIZES.get((family, size), {})}
    objective_name, label = FAMILIES[family]
    tokenizer = synthetic_tokenizer(s["vocab"])
    ids = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
               bos_token_id=tokenizer.bos_token_id)
    if family in ("bart", "t5"):
        ids["decoder_start_token_id"] = tokenizer.eos_token_id if family == "bart" else tokenizer.pad_token_id
    extra = {"head_dim": s["d"] // s["heads"]} if family == "t5" else {}
    cfg = ModelConfig.preset(family, vocab_size=s["vocab"], d_model=s["d"], n_layers=s["layers"],
                             n_heads=s["heads"], d_ff=s["ff"], max_seq_len=s["seq"] + 8, **extra, **ids,
                             attention_dropout=attention_dropout)
    objective = build_objective(objective_name, tokenizer, cfg, documents=documents)
    g = torch.Generator().manual_seed(0)
    length = objective.block_length(s["seq"])
    blocks = torch.randint(len(SPECIALS), s["vocab"], (s["batch"], length), generator=g)
    blocks[:, ::37] = tokenizer.eos_token_id  # document separators, as packing leaves them
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in objective.collate(blocks, g).items()}
    ours = Transformer(cfg).to(device).train() if "ours" in sides else None
    if ours is not None:
        ours.use_attention_kernel(kernel)
    theirs = reference_model(family, s, cfg).to(device).train() if "theirs" in sides else None
    hf_inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "decoder_input_ids", "labels")
                 if k in batch}
    if family in ("gpt2", "modernbert_decoder"):
        hf_inputs = {"input_ids": batch["input_ids"], "labels": batch["input_ids"]}
    enc_len = batch["input_ids"].shape[1]
    dec_len = batch["decoder_input_ids"].shape[1] if "decoder_input_ids" in batch else enc_len
    n_enc, n_dec = batch["input_ids"].numel(), s["batch"] * dec_len
    mlm = FAMILIES[family][0] == "mlm"
    predicted = int((batch["labels"] != -100).sum()) if mlm else n_dec
    return {
        "name": label,
        "tokens": n_enc,
        "ours": {"model": ours, "loss": lambda m: objective.loss(m, batch)[0],
                 "flops": cfg.train_flops(n_enc, n_dec, predicted, enc_len, dec_len)},
        "theirs": {"model": theirs, "loss": lambda m: m(**hf_inputs).loss,
                   "flops": cfg.train_flops(n_enc, n_dec, predicted if family == "modernbert" else
                                            n_dec if not mlm else n_enc, enc_len, dec_len)},
    }
