"""Models behind OpenAI-compatible servers: ``tasksup.load_model("openai:MODEL", base_url=...)``.

- :mod:`.client`: HTTP (httpx), concurrency limit, retries with back-off, JSON response cache, counters;
- :mod:`.model`: :class:`RemoteLanguageModel`, the :class:`~tasksup.models.LanguageModel` interface
  in exact mode (prompt log-probabilities through ``echo``);
- :mod:`.approx`: approximate mode (beam over top-N log-probs; lower bounds);
- :mod:`.search`: best-first top-k over top-N lists, certified exact when the hidden mass cannot matter;
- :mod:`.llamacpp`: a tiny GGUF model and a local llama.cpp server, for tests and trying it out.

Docs: docs/remote.md.
"""

from tasksup.models.remote.client import CompletionsClient, ResponseCache, Usage
from tasksup.models.remote.model import RemoteLanguageModel, RemoteSettings, load_remote_model
from tasksup.models.remote.search import RemoteSearchResult

__all__ = ["CompletionsClient", "RemoteLanguageModel", "RemoteSearchResult", "RemoteSettings", "ResponseCache", "Usage",
           "load_remote_model"]
