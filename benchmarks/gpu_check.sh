#!/usr/bin/env bash
# The GPU check, one table in a few minutes on one CUDA GPU: training steps (forward, loss, backward, fused AdamW) of
# GPT-2 124M (12 x 768, sequence 1024, batch 16) against GPT2LMHeadModel, BERT-base MLM (sequence 128, batch 128)
# against BertForMaskedLM, BART-base infilling (6 + 6 layers, sequence 1024) against BartForConditionalGeneration,
# T5 v1.1-base span corruption (12 + 12 layers, gated d_ff 2048, inputs 512) against T5ForConditionalGeneration and
# ModernBERT-base MLM (22 layers, sequence 1024) against ModernBertForMaskedLM; bf16 autocast, both sides
# torch.compile'd, ours with and without document masking;
# tokens/s, the ratio and MFU against the GPU's dense bf16 peak. Targets: GPT-2 124M >= 45% MFU (nanoGPT ~37% on
# A100, Megatron-LM up to 47% on H100).
#
#   benchmarks/gpu_check.sh            # on the GPU machine, from the repository root or anywhere
#   benchmarks/gpu_check.sh --smoke    # the same script at toy sizes on CPU: checks that it runs, measures nothing
#
# Needs torch, transformers and tokenizers only (no install: the repository goes on PYTHONPATH).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
python=$(command -v python || command -v python3)  # GPU images often ship only python3
if [ "${1:-}" = "--smoke" ]; then
  exec "$python" benchmarks/train_step.py --families gpt2,bert,bart,t5,modernbert --sizes small --dtypes fp32 --compile \
    --compiled-only --documents both --steps 2 --warmup 1 --no-memory
fi
"$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "gpu_check.sh: no CUDA GPU here; run it on the GPU machine (or --smoke on CPU)")'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$python" benchmarks/train_step.py --families gpt2,bert,bart,t5,modernbert --sizes base --dtypes bf16 --compile \
  --compiled-only --documents both --steps 10 --warmup 3 --no-memory
