"""Grow a GPT-2 checkpoint by identity layers (tasksup.models.widen.widen_gpt2), for the copy probes of
checkpoints/fig2-small/recipes/copy-probes: python scripts/grow_layers.py SRC DST EXTRA_LAYERS.
Prints the new depth and the largest logit difference to the original (0 up to float error)."""
import sys, shutil
from pathlib import Path
import torch
from transformers import GPT2LMHeadModel
from tasksup.models.widen import widen_gpt2
src, dst, extra = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
m = GPT2LMHeadModel.from_pretrained(src).eval()
big = widen_gpt2(m, 1, extra)
dst.mkdir(parents=True, exist_ok=True)
for f in src.iterdir():
    if f.is_file() and f.name not in ("model.safetensors", "config.json"):
        shutil.copy(f, dst / f.name)
big.save_pretrained(dst)
ids = torch.randint(0, m.config.vocab_size, (1, 50))
print(big.config.n_layer, (big(ids).logits - m(ids).logits).abs().max().item())
