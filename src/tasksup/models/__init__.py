"""Loading causal LMs (Hugging Face directories, hub ids, our checkpoints) and the model wrapper."""

from tasksup.models.char_tokenizer import build_char_tokenizer
from tasksup.models.loading import load_model, load_tokenizer
from tasksup.models.wrapper import LanguageModel

__all__ = ["LanguageModel", "build_char_tokenizer", "load_model", "load_tokenizer"]
