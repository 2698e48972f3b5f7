"""A GPT-BERT hybrid run, trained by the real trainer, logs both losses and exports as its family's causal class,
which computes what our model computes run causally (fp32 logits within 1e-4)."""
import json

import pytest
import torch
from train_fixtures import family_run, train_val_rows, write_corpus

NATIVE = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}


@pytest.mark.parametrize("family", sorted(NATIVE))
def test_hybrid_run_exports_as_the_causal_class_with_our_causal_logits(family, tmp_path):
    import transformers

    from pretrain.export.to_hf import export_run
    from pretrain.train.saved_run import load_run_model

    run = family_run(tmp_path / "run", family, write_corpus(tmp_path / "data", 80), tmp_path / "cache", 4, **{
        "--objective.name": "hybrid", "--objective.options": json.dumps({"causal_share": 0.5}),
        "--run.mixed_precision": "no", "--run.peak_flops": "1e12"})
    rows = train_val_rows(run)
    train = [r for r in rows if r["split"] == "train"]
    assert all("clm_loss" in r or r["clm_n_predicted"] == 0 for r in train) and all("mntp_loss" in r for r in train)
    assert "l2r_loss" in [r for r in rows if r["split"] == "val"][-1]  # the model left to right on validation

    out = export_run(run, tmp_path / "hf", log=lambda m: None)
    assert json.loads((out / "config.json").read_text())["architectures"] == [NATIVE[family]]
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(hf_model).__name__ == NATIVE[family]
    model, _, tokenizer, _ = load_run_model(run)
    batch = tokenizer(["the quick brown fox", "a lazy dog learns every day from text"], return_tensors="pt",
                      padding=True)
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        theirs = hf_model(**batch).logits
        ours = model.logits(model(batch["input_ids"]))  # run causally: the fast path, no per-row choice
        rows_causal = model.logits(model(batch["input_ids"], causal=torch.ones(2, dtype=torch.bool)))
        bidirectional = model.logits(model(batch["input_ids"], batch["attention_mask"],
                                           causal=torch.zeros(2, dtype=torch.bool)))
    assert (ours - theirs)[real].abs().max() < 1e-4
    assert (rows_causal - theirs)[real].abs().max() < 1e-4
    assert (bidirectional - theirs)[real].abs().max() > 1e-3  # the check can tell the two modes apart
