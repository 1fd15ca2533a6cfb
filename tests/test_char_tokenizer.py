"""The character tokenizer (a BPE with no merges) gives the ids of the slow, obvious one: a WordLevel model behind a
one-character regex split, what checkpoints before 2026-12-07 held."""

import json
from pathlib import Path

import pytest
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer

from tasksup.models.char_tokenizer import build_char_tokenizer

ROOT = Path(__file__).resolve().parents[1]
MODELS = {p.parent.name: json.loads(p.read_text())["model"] for p in (ROOT / "checkpoints").glob("*/tokenizer.json")}
CHAR_CHECKPOINTS = sorted(name for name, model in MODELS.items() if model["type"] == "BPE" and not model["merges"])


def one_char_split(vocab: dict[str, int]) -> Tokenizer:
    slow = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    slow.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    slow.add_special_tokens(["<pad>", "<unk>", "<eos>"])  # as both tokenizers' added tokens
    return slow


def texts(vocab: dict[str, int]) -> list[str]:
    chars = "".join(t for t in vocab if len(t) == 1)
    return [chars, chars[::-1], "12+34->46\n20+22->42\n91+83->", "unknown: €漢 ü\tß", "a<eos>b<pad>", "", " \n \n"]


def test_committed_character_tokenizers_are_the_no_merge_bpe():
    assert not [name for name, model in MODELS.items() if model["type"] == "WordLevel"]  # none left behind
    assert {"numeric6-l", "ret-small", "translate-small"} <= set(CHAR_CHECKPOINTS)


@pytest.mark.parametrize("name", CHAR_CHECKPOINTS)
def test_committed_tokenizer_gives_the_one_char_split_ids(name):
    tok = AutoTokenizer.from_pretrained(str(ROOT / "checkpoints" / name))
    slow = one_char_split(json.loads((ROOT / "checkpoints" / name / "tokenizer.json").read_text())["model"]["vocab"])
    for text in texts(tok.get_vocab()):
        ids = tok(text, add_special_tokens=True)["input_ids"]
        assert ids == slow.encode(text).ids, text
        assert tok.decode(ids, skip_special_tokens=False) == text or "<unk>" in tok.convert_ids_to_tokens(ids)


def test_built_tokenizer_gives_the_one_char_split_ids():
    tok = build_char_tokenizer("áéíóúüñ")
    slow = one_char_split(tok.get_vocab())
    for text in texts(tok.get_vocab()) + ["dieciséis", "año"]:
        assert tok(text)["input_ids"] == slow.encode(text).ids, text
