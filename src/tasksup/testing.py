"""Tiny random causal LMs of several architectures, for tests, benchmarks and quick checks.

No download is needed for the char-level models. ``real_vocab_dir`` fetches (once per machine,
into ``$TASKSUP_CACHE`` or ``~/.cache/tasksup``) the vocabulary-only GGUF files of real models that
the llama-cpp-python source distribution carries, and saves each as an ordinary tokenizer folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import torch

from tasksup.models.char_tokenizer import build_char_tokenizer

ARCHITECTURES = ("gpt2", "llama", "qwen2", "gpt_neox")
LLAMA_CPP_SDIST = "llama-cpp-python==0.3.36"
REAL_VOCABS = {  # our name -> (GGUF file in the sdist, the architecture a tiny model of it uses)
    "gpt2": ("ggml-vocab-gpt-2.gguf", "gpt2"),
    "llama3": ("ggml-vocab-llama-bpe.gguf", "llama"),
    "qwen2": ("ggml-vocab-qwen2.gguf", "qwen2"),
    "llama2": ("ggml-vocab-llama-spm.gguf", "llama"),
}


def cache_dir() -> Path:
    path = Path(os.environ.get("TASKSUP_CACHE", Path.home() / ".cache" / "tasksup"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def tiny_config(arch: str, vocab_size: int, *, layers: int = 2, width: int = 32, heads: int = 4,
                context: int = 2048, bos_id: int | None = None, eos_id: int | None = None, pad_id: int | None = None):
    from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig, Qwen2Config

    ids = dict(bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id)
    if arch == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_layer=layers, n_embd=width, n_head=heads, n_positions=context, **ids)
    common = dict(vocab_size=vocab_size, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                  num_attention_heads=heads, max_position_embeddings=context, **ids)
    if arch == "llama":
        return LlamaConfig(num_key_value_heads=heads // 2, **common)
    if arch == "qwen2":
        return Qwen2Config(num_key_value_heads=heads // 2, **common)
    if arch == "gpt_neox":
        return GPTNeoXConfig(**common)
    raise ValueError(f"unknown architecture {arch!r}; choose from {ARCHITECTURES}")


def word_level_tokenizer(vocab: list[str]):
    """A tokenizer over exactly ``vocab`` (which must hold ``<pad>``, ``<unk>``, ``<eos>``) that encodes
    text one character per token; multi-character entries are never produced by encoding but a model
    can still generate them, which is what exhaustive-enumeration tests of decoding need."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")


def save_tiny_model(path: str | Path, arch: str, tokenizer=None, *, seed: int = 0, sharpen: float = 8.0,
                    **config) -> Path:
    """Build a random model of ``arch`` on ``tokenizer`` (default: our char tokenizer) and save both.

    ``sharpen`` scales the output embedding (1.0: the plain random init, near-uniform outputs).
    """
    from transformers import AutoModelForCausalLM

    tokenizer = tokenizer or build_char_tokenizer()
    cfg = tiny_config(arch, len(tokenizer), bos_id=tokenizer.bos_token_id, eos_id=tokenizer.eos_token_id,
                      pad_id=tokenizer.pad_token_id, **config)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():  # random init is near-uniform; sharpen it so that outputs differ by prompt
        model.get_output_embeddings().weight.mul_(sharpen)
    path = Path(path)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def real_vocab_dir(name: str) -> Path:
    """A tokenizer folder for one of :data:`REAL_VOCABS`, built from llama.cpp's vocab-only GGUF files."""
    from transformers import AutoTokenizer

    gguf_name, _ = REAL_VOCABS[name]
    out = cache_dir() / "vocab" / name
    if (out / "tokenizer_config.json").is_file():
        return out
    gguf = cache_dir() / "gguf" / gguf_name
    if not gguf.is_file():
        _extract_vocab_files(gguf.parent)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf_name)
    tmp = out.with_suffix(".tmp")
    tok.save_pretrained(tmp)
    tmp.rename(out)
    return out


def _extract_vocab_files(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    sdists = sorted(cache_dir().glob("llama_cpp_python-*.tar.gz"))
    if not sdists:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q",
                        LLAMA_CPP_SDIST, "-d", str(cache_dir())], check=True)
        sdists = sorted(cache_dir().glob("llama_cpp_python-*.tar.gz"))
    wanted = {g for g, _ in REAL_VOCABS.values()}
    with tarfile.open(sdists[-1]) as tar:
        for member in tar.getmembers():
            base = os.path.basename(member.name)
            if base in wanted and "/vendor/llama.cpp/models/" in member.name:
                member.name = base
                tar.extract(member, dest, filter="data")


def real_vocab_model(name: str, **config) -> Path:
    """A tiny random model on a real vocabulary (cached); its folder loads with ``load_model``."""
    from transformers import AutoTokenizer

    _, arch = REAL_VOCABS[name]
    out = cache_dir() / "models" / f"{name}-{arch}"
    if not (out / "config.json").is_file():
        tok = AutoTokenizer.from_pretrained(str(real_vocab_dir(name)))
        save_tiny_model(out.with_suffix(".tmp"), arch, tok, **config).rename(out)
    return out
