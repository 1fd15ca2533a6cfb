"""Shared test fixtures: tiny random models the tests build themselves.

* ``tiny_model_dirs``: ``{arch: Path}`` — one saved tiny random model (char tokenizer) per
  architecture in :data:`tasksup.testing.ARCHITECTURES` (gpt2, llama, qwen2, gpt_neox), built once
  per test session in a temporary directory. Use it for CLI tests (``--model <dir>``).
* ``tiny_lm``: a factory ``tiny_lm(arch) -> LanguageModel`` loading those folders (cached).
* ``real_vocab_models``: ``{name: Path}`` — tiny random models on the four REAL vocabularies
  (gpt2, llama3, qwen2, llama2/SentencePiece), cached in ``~/.cache/tasksup`` once per machine
  (the first build extracts the llama-cpp-python sdist, downloading it with pip if absent).
* ``real_vocab_lm``: a factory ``real_vocab_lm(name) -> LanguageModel`` loading those (cached).

Torch runs single-threaded in tests (``TASKSUP_TEST_THREADS`` overrides): the models are tiny, and
on a shared 2-core machine two spinning OpenMP threads per process made small matmuls ~20x slower.
"""

from __future__ import annotations

import os

import pytest
import torch

from tasksup import load_model
from tasksup.testing import ARCHITECTURES, REAL_VOCABS, real_vocab_model, save_tiny_model


def pytest_configure(config):
    torch.set_num_threads(int(os.environ.get("TASKSUP_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_models")
    return {arch: save_tiny_model(root / arch, arch) for arch in ARCHITECTURES}


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dirs):
    cache = {}

    def get(arch: str):
        if arch not in cache:
            cache[arch] = load_model(str(tiny_model_dirs[arch]), device="cpu")
        return cache[arch]

    return get


@pytest.fixture(scope="session")
def real_vocab_models():
    return {name: real_vocab_model(name) for name in REAL_VOCABS}


@pytest.fixture(scope="session")
def real_vocab_lm(real_vocab_models):
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = load_model(str(real_vocab_models[name]), device="cpu")
        return cache[name]

    return get
