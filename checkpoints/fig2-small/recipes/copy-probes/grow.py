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
