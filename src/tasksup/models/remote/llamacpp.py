"""A tiny llama-architecture GGUF on a real vocabulary, and a local llama.cpp server for it.

Used by the tests (a real engine, not a mock) and handy for trying remote mode without a GPU::

    from tasksup.models.remote.llamacpp import LlamaCppServer, tiny_llama_gguf
    gguf = tiny_llama_gguf()                       # cached under ~/.cache/tasksup/remote-models
    with LlamaCppServer(gguf) as server:           # python -m llama_cpp.server on a free port
        lm = tasksup.load_model("openai:tiny", base_url=server.url, tokenizer=str(gguf))
        twin = tasksup.load_model(str(gguf.parent), gguf_file=gguf.name)   # the same file in transformers

The GGUF holds a real vocabulary (llama.cpp's vocab-only files, see :data:`tasksup.testing.REAL_VOCABS`)
and random float32 weights written with the ``gguf`` package. The server keeps its KV cache in float32
(``type_k``/``type_v`` 0; llama.cpp's default f16 cache alone moves log-probs by ~1e-3).
Needs ``pip install 'llama-cpp-python[server]'``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from tasksup.errors import TasksupError


def tiny_llama_gguf(vocab: str = "llama2", *, layers: int = 2, width: int = 64, heads: int = 4, kv_heads: int = 2,
                    ff: int = 128, context: int = 512, seed: int = 0, out: str | Path | None = None) -> Path:
    """Write (once; cached) a random llama model on one of the real vocabularies as a GGUF file."""
    import gguf

    from tasksup.testing import REAL_VOCABS, cache_dir, real_vocab_dir

    vocab_file, _ = REAL_VOCABS[vocab]
    name = f"tiny-{vocab}-l{layers}w{width}h{heads}k{kv_heads}f{ff}c{context}s{seed}"
    path = Path(out) if out else cache_dir() / "remote-models" / name / f"{name}.gguf"
    if path.is_file():
        return path
    real_vocab_dir(vocab)  # makes sure the vocabulary files are extracted
    reader = gguf.GGUFReader(str(cache_dir() / "gguf" / vocab_file))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    w = gguf.GGUFWriter(str(tmp), "llama")
    for key, field in reader.fields.items():
        if key.startswith("tokenizer."):
            types = field.types
            w.add_key_value(key, field.contents(), types[0], types[1] if len(types) > 1 else None)
    n_vocab = len(reader.fields["tokenizer.ggml.tokens"].contents())
    w.add_name(name)
    w.add_context_length(context)
    w.add_embedding_length(width)
    w.add_block_count(layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(width // heads)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    rng = np.random.default_rng(seed)

    def weight(name: str, rows: int, cols: int, scale: float | None = None) -> None:  # numpy (rows, cols)
        w.add_tensor(name, (rng.standard_normal((rows, cols)) * (scale or cols ** -0.5)).astype(np.float32))

    def norm(name: str) -> None:
        w.add_tensor(name, (1 + 0.1 * rng.standard_normal(width)).astype(np.float32))

    kv = kv_heads * (width // heads)
    weight("token_embd.weight", n_vocab, width, 1.0)
    for i in range(layers):
        norm(f"blk.{i}.attn_norm.weight")
        weight(f"blk.{i}.attn_q.weight", width, width)
        weight(f"blk.{i}.attn_k.weight", kv, width)
        weight(f"blk.{i}.attn_v.weight", kv, width)
        weight(f"blk.{i}.attn_output.weight", width, width)
        norm(f"blk.{i}.ffn_norm.weight")
        weight(f"blk.{i}.ffn_gate.weight", ff, width)
        weight(f"blk.{i}.ffn_up.weight", ff, width)
        weight(f"blk.{i}.ffn_down.weight", width, ff)
    norm("output_norm.weight")
    weight("output.weight", n_vocab, width, 0.5)  # sharper than uniform, so that outputs differ by prompt
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.rename(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaCppServer:
    """``python -m llama_cpp.server`` serving one GGUF on 127.0.0.1; :meth:`stop` / :meth:`start` again."""

    def __init__(self, gguf_path: str | Path, *, alias: str = "tiny", port: int | None = None, n_ctx: int = 512,
                 api_key: str | None = None, threads: int = 1, log: str | Path | None = None):
        self.gguf_path, self.alias, self.port = Path(gguf_path), alias, port or free_port()
        self.n_ctx, self.api_key, self.threads = n_ctx, api_key, threads
        self.log = Path(log) if log else self.gguf_path.with_suffix(f".server-{self.port}.log")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf_path), "--model_alias", self.alias,
               "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.n_ctx), "--logits_all", "true",
               "--type_k", "0", "--type_v", "0", "--n_threads", str(self.threads),
               "--n_threads_batch", str(self.threads), "--verbose", "false"]
        return cmd + (["--api_key", self.api_key] if self.api_key else [])

    def start(self, timeout: float = 90.0) -> "LlamaCppServer":
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
                raise TasksupError(f"llama.cpp server exited with status {self.process.returncode}: {tail[0]}")
            try:
                if httpx.get(f"{self.url}/models", headers=headers, timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TasksupError(f"llama.cpp server did not answer within {timeout:.0f} s (log: {self.log})")

    def stop(self, kill: bool = False) -> None:
        """Terminate (or, with ``kill``, SIGKILL: a crash) and wait for the process."""
        if self.process is None or self.process.poll() is not None:
            return
        (self.process.kill if kill else self.process.terminate)()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> "LlamaCppServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def hf_twin(gguf_path: str | Path) -> Path:
    """The same GGUF as transformers loads it (``from_pretrained(dir, gguf_file=...)``), saved once.

    Converting a GGUF's vocabulary and weights takes transformers ~20 s; the converted folder
    (safetensors + tokenizer) is cached beside the file and loads in about a second.
    """
    from tasksup.models.loading import load_model

    gguf_path = Path(gguf_path)
    out = gguf_path.parent / "hf-twin"
    if not (out / "config.json").is_file():
        from transformers import AutoModelForCausalLM

        lm = load_model(str(gguf_path.parent), gguf_file=gguf_path.name, device="cpu")
        config = lm.model.config
        config.quantization_config = None  # transformers refuses to save a model it loaded from a GGUF
        del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config)
        plain.load_state_dict(lm.model.state_dict())
        tmp = out.with_suffix(".tmp")
        plain.save_pretrained(tmp)
        lm.tokenizer.save_pretrained(tmp)
        tmp.rename(out)
    return out
