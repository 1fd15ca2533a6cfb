"""`tasksup run` / `tasksup tasks` end to end on a tiny model: files, JSONL, resume, and bad input."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tasksup.cli import app
from tasksup.tasks import registry
from tasksup.testing import save_tiny_model

ROOT = Path(__file__).resolve().parents[1]
COPY_ADD = str(ROOT / "configs" / "fig2_copy_add.yaml")
FAST = ["--set", "n_prompts=3", "--set", "top_k=2", "--set", "top_max_tokens=2", "--no-progress"]
REGISTERED_TASKS, REGISTERED_FAMILIES = dict(registry._TASKS), dict(registry._FAMILIES)
CORE_KEYS = {"prompt", "tasks", "mixture", "answers", "logprobs", "probs", "top"}


def tasksup(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


@pytest.fixture(scope="module")
def model(tiny_model_dirs):
    return str(tiny_model_dirs["gpt2"])


def test_run_writes_results(tmp_path, model, tiny_lm):
    out = tmp_path / "run"
    res = tasksup("run", COPY_ADD, "--model", model, "--out", out, *FAST)
    assert res.exit_code == 0, res.output
    for name in ("config.json", "run.json", "results.jsonl", "summary.json", "summary.csv", "fig2.png", "fig2.pdf"):
        assert (out / name).is_file(), name
    records = [json.loads(s) for s in lines(out / "results.jsonl")]
    assert [r["index"] for r in records] == [0, 1, 2]
    lm = tiny_lm("gpt2")
    for r in records:
        assert CORE_KEYS <= set(r)
        assert r["tasks"] == ["copy_op1", "copy_op2", "add_ops"] and r["mixture"] == pytest.approx([1 / 3] * 3)
        assert r["counts"] == [20, 20, 20] and len(r["prompt"].split("\n")) == 61
        assert np.allclose(r["probs"], np.exp(r["logprobs"]))
        assert np.allclose(r["logprobs"], lm.answer_logprobs(r["prompt"], r["answers"])[0], atol=1e-6)
        assert r["other"] == pytest.approx(1 - sum(r["probs"]))
        assert len(r["top"]) == 2 and r["r"] == sum(a in [o for o, _ in r["top"]] for a in r["answers"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_prompts"] == 3 and set(summary["per_task"]) == {"copy_op1", "copy_op2", "add_ops"}
    medians = ", ".join(f"{t} {summary['per_task'][t]['median']:.3f}" for t in ("copy_op1", "copy_op2", "add_ops"))
    assert res.output.strip().splitlines()[-1] == (f"median P(answer) over 3 prompts: {medians}; other "
                                                   f"{summary['other']['median']:.3f}; median r {summary['r']['median']:g}; "
                                                   f"results in {out}")
    assert summary["per_task"]["add_ops"]["median"] == pytest.approx(np.median([r["probs"][2] for r in records]))
    for key in ("other", "kl", "kl_normalized", "r"):
        assert set(summary[key]) == {"mean", "median", "q1", "q3"}
    run = json.loads((out / "run.json").read_text())
    assert run["seed"] == 0 and run["model"]["model_type"] == "gpt2" and run["versions"]["torch"]
    assert json.loads((out / "config.json").read_text())["n_prompts"] == 3


def test_version():
    from importlib.metadata import version

    res = tasksup("--version")
    assert res.exit_code == 0 and res.output.strip() == f"tasksup {version('tasksup')}"


def test_resume(tmp_path, model):
    out = tmp_path / "run"
    assert tasksup("run", COPY_ADD, "--model", model, "--out", out, *FAST).exit_code == 0
    first = lines(out / "results.jsonl")
    assert tasksup("run", COPY_ADD, "--model", model, "--out", out, *FAST, "--set", "n_prompts=5").exit_code == 0
    grown = lines(out / "results.jsonl")
    assert grown[:3] == first and [json.loads(s)["index"] for s in grown] == [0, 1, 2, 3, 4]
    # the same command again computes nothing, duplicates nothing and changes no file (provenance included)
    files = {f.name: f.read_bytes() for f in out.iterdir() if f.is_file()}
    assert tasksup("run", COPY_ADD, "--model", model, "--out", out, *FAST, "--set", "n_prompts=5").exit_code == 0
    assert lines(out / "results.jsonl") == grown
    assert {f.name: f.read_bytes() for f in out.iterdir() if f.is_file()} == files
    # an interrupted write leaves half a line: it is dropped and that prompt recomputed identically
    text = (out / "results.jsonl").read_text()
    (out / "results.jsonl").write_text(text[: len(text) - len(grown[-1]) // 2 - 1])
    assert tasksup("run", COPY_ADD, "--model", model, "--out", out, *FAST, "--set", "n_prompts=5").exit_code == 0
    again = lines(out / "results.jsonl")
    assert again[:4] == grown[:4] and len(again) == 5
    redone, before = json.loads(again[4]), json.loads(grown[4])  # scored alone now, in a batch of 2 before
    assert {k: v for k, v in redone.items() if k not in ("logprobs", "probs", "other", "kl", "kl_normalized", "top")} \
        == {k: v for k, v in before.items() if k not in ("logprobs", "probs", "other", "kl", "kl_normalized", "top")}
    assert np.allclose(redone["logprobs"], before["logprobs"], rtol=0, atol=1e-5)
    run = json.loads((out / "run.json").read_text())  # one entry per segment of work: first run, grow, redo
    assert run["resumed"] == 2 and len(run["segments"]) == 3 and run["started"] == run["segments"][0]["started"]


def test_packed_results_are_read_kept_and_grown(tmp_path, model):
    """`tasksup pack`: the same records, byte-identical on a second pack; a finished re-run changes no file; a run
    that grows unpacks first and then holds exactly an unpacked run's records; summarize reads a packed folder."""
    out, plain = tmp_path / "run", tmp_path / "plain"
    for folder in (out, plain):
        assert tasksup("run", COPY_ADD, "--model", model, "--out", folder, *FAST).exit_code == 0
    records = lines(out / "results.jsonl")
    res = tasksup("pack", tmp_path)
    assert res.exit_code == 0 and "bytes in all" in res.output, res.output
    assert not (out / "results.jsonl").exists() and (out / "results.jsonl.gz").is_file()
    packed = (out / "results.jsonl.gz").read_bytes()
    assert (plain / "results.jsonl.gz").read_bytes() == packed  # the same records give the same bytes
    from tasksup.results import RunDir

    assert [json.dumps(r, ensure_ascii=False) for r in RunDir.read_records(out / "results.jsonl.gz")] == records
    files = {f.name: f.read_bytes() for f in out.iterdir() if f.is_file()}
    assert tasksup("run", COPY_ADD, "--model", model, "--out", out, *FAST).exit_code == 0
    assert {f.name: f.read_bytes() for f in out.iterdir() if f.is_file()} == files
    assert tasksup("summarize", out).exit_code == 0
    grow = ["--set", "n_prompts=5"]
    assert tasksup("run", COPY_ADD, "--model", model, "--out", out, *FAST, *grow).exit_code == 0
    fresh = tmp_path / "fresh"
    assert tasksup("run", COPY_ADD, "--model", model, "--out", fresh, *FAST, *grow).exit_code == 0
    assert not (out / "results.jsonl.gz").exists() and lines(out / "results.jsonl")[:3] == records
    assert len(lines(out / "results.jsonl")) == 5
    assert [json.loads(s)["prompt"] for s in lines(out / "results.jsonl")] == \
        [json.loads(s)["prompt"] for s in lines(fresh / "results.jsonl")]


def test_different_config_in_same_dir_is_refused(tmp_path, model):
    out = tmp_path / "run"
    assert tasksup("run", COPY_ADD, "--model", model, "--out", out, *FAST).exit_code == 0
    before = (out / "results.jsonl").read_text()
    res = tasksup("run", COPY_ADD, "--model", model, "--out", out, *FAST, "--set", "seed=1")
    assert res.exit_code == 2 and "different config" in res.stderr
    assert (out / "results.jsonl").read_text() == before


def test_retrained_weights_in_same_dir_are_refused(tmp_path, model):
    """Same config, same architecture, same file sizes, other weights: resuming would mix two models' results."""
    import torch
    from safetensors.torch import load_file, save_file

    mine = tmp_path / "model"
    shutil.copytree(model, mine)
    out = tmp_path / "run"
    assert tasksup("run", COPY_ADD, "--model", mine, "--out", out, *FAST).exit_code == 0
    before = (out / "results.jsonl").read_text()
    weights = load_file(mine / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] + torch.full_like(weights[name], 1e-3)
    save_file(weights, mine / "model.safetensors", metadata={"format": "pt"})
    res = tasksup("run", COPY_ADD, "--model", mine, "--out", out, *FAST, "--set", "n_prompts=5")
    assert res.exit_code == 2 and "another model" in res.stderr
    assert (out / "results.jsonl").read_text() == before


@pytest.fixture(scope="module")
def broken_models(tmp_path_factory, tiny_model_dirs):
    root = tmp_path_factory.mktemp("broken")
    corrupt = root / "corrupt"
    shutil.copytree(tiny_model_dirs["gpt2"], corrupt)
    with open(corrupt / "model.safetensors", "r+b") as f:
        f.truncate(1000)
    (root / "not_a_model").mkdir()
    empty_answer = root / "empty_answer.yaml"
    empty_answer.write_text("tasks:\n  - {name: test_cli_empty, input: pair_at, answer: 'str(a)[5:]'}\n")
    return {"corrupt": corrupt, "not_a_model": root / "not_a_model", "empty_answer": empty_answer,
            "short": save_tiny_model(root / "short", "gpt2", context=256)}


BAD_INPUTS = {
    "unknown family": (["--set", "tasks=no_such_family"], "unknown task or family"),
    "unknown task": (["--set", "tasks=[copy_op1,no_such_task]"], "unknown task 'no_such_task'"),
    "D sum": (["--set", "mixture=[0.5,0.6,0.1]"], "sums to 1.2"),
    "D length": (["--set", "mixture=[0.5,0.5]"], "2 entries but there are 3 tasks"),
    "D fraction typo": (["--set", "mixture=[1/3,1/3,1/4]"], "sums to"),
    "m too small": (["--set", "n_examples=2"], "too small"),
    "unknown key": (["--set", "n_promts=3"], "unknown config key 'n_promts'"),
    "wrong type": (["--set", "n_prompts=many"], "n_prompts"),
    "unknown experiment": (["--set", "experiment=fig99"], "unknown experiment"),
    "missing model dir": (["--model", "/nonexistent/model/dir"], "does not exist"),
    "corrupt model dir": (["--model", "{corrupt}"], "could not load model"),
    "not a model dir": (["--model", "{not_a_model}"], "no config.json"),
    "prompt too long": (["--model", "{short}"], "context is 256: the largest m that fits is"),
    "empty answer": (["--set", "task_files=[{empty_answer}]", "--set", "tasks=[test_cli_empty]"], "empty"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2(tmp_path, model, broken_models, case):
    args, message = BAD_INPUTS[case]
    args = [a.format(**broken_models) for a in args]
    res = tasksup("run", COPY_ADD, "--model", model, "--out", tmp_path / "run", *FAST, *args)
    assert res.exit_code == 2, res.output
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tasksup: error: ") and message in err[0], res.stderr
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_missing_config_file(tmp_path):
    res = tasksup("run", tmp_path / "nope.yaml", "--model", "x")
    assert res.exit_code == 2 and "does not exist" in res.stderr


def test_console_script_error_contract(tmp_path, broken_models):
    """The installed `tasksup` script itself: exit status 2, one line on stderr, no traceback."""
    script = Path(sys.executable).parent / "tasksup"
    res = subprocess.run([str(script), "run", COPY_ADD, "--model", str(broken_models["short"]),
                          "--out", str(tmp_path / "run"), *FAST], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    [line] = res.stderr.strip().splitlines()
    assert re.fullmatch(r"tasksup: error: n_examples=\d+ needs \d+ tokens but .*'s context is 256: "
                        r"the largest m that fits is \d+ \(set --set n_examples=\d+\)", line), line
    assert "Traceback" not in res.stderr + res.stdout


def test_tasks_lists_every_family(monkeypatch):
    # list only what was registered at import time: other tests register deliberately broken tasks
    monkeypatch.setattr(registry, "_TASKS", REGISTERED_TASKS)
    monkeypatch.setattr(registry, "_FAMILIES", REGISTERED_FAMILIES)
    res = tasksup("tasks")
    assert res.exit_code == 0
    for name in ("add_translate (K=4)", "country (K=3)", "copy_add (K=3)", "letters (K=4)", "ret (K=8)",
                 "plus (K=10)", "translate (K=3)", "numeric6 (K=6)", "add_es", "num_sq", "ret8", "plus9"):
        assert name in res.output


def test_one_checkpoint_at_two_paths_is_one_model(tmp_path, model):
    """Identity comes from the contents: the same checkpoint by its absolute path, or copied elsewhere, resumes
    the folder (the config's `model` differs, the fingerprint does not)."""
    out = tmp_path / "run"
    assert tasksup("run", COPY_ADD, "--model", model, "--out", out, *FAST).exit_code == 0
    copy = tmp_path / "elsewhere"
    shutil.copytree(model, copy)
    res = tasksup("run", COPY_ADD, "--model", copy, "--out", out, *FAST, "--set", "n_prompts=4")
    assert res.exit_code == 0, res.output
    assert len(lines(out / "results.jsonl")) == 4
    assert json.loads((out / "config.json").read_text())["model"] == str(copy)


@pytest.mark.parametrize("kind", ["", "sha256:"])
def test_an_old_fingerprint_is_refused_until_verified(tmp_path, model, kind):
    """A folder whose run.json holds an older fingerprint (file sizes, or contents with the path in the config)
    takes no new rows: one line names `tasksup refingerprint`, which checks it against the checkpoint the config
    names and upgrades it; a checkpoint that no longer matches is not upgraded and stays refused."""
    from tasksup import load_model
    from tasksup.models.wrapper import fingerprint

    mine = tmp_path / "model"
    shutil.copytree(model, mine)
    out = tmp_path / "run"
    assert tasksup("run", COPY_ADD, "--model", mine, "--out", out, *FAST).exit_code == 0
    meta = json.loads((out / "run.json").read_text())
    config = dict(load_model(str(mine)).model.config.to_dict(), _name_or_path=meta["model"]["name"])
    current, meta["model"]["fingerprint"] = meta["model"]["fingerprint"], fingerprint(config, str(mine), kind)
    assert meta["model"]["fingerprint"] != current and meta["model"]["fingerprint"].startswith(kind)
    (out / "run.json").write_text(json.dumps(meta))
    before = (out / "results.jsonl").read_text()
    res = tasksup("run", COPY_ADD, "--model", mine, "--out", out, *FAST, "--set", "n_prompts=4")
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "predates content hashing" in res.stderr and f"tasksup refingerprint {out}" in res.stderr
    assert (out / "results.jsonl").read_text() == before

    stale = tmp_path / "stale"
    shutil.copytree(out, stale)
    config_file = json.loads((mine / "config.json").read_text())  # the same shapes, another model
    (mine / "config.json").write_text(json.dumps(dict(config_file, resid_pdrop=0.25)))
    res = tasksup("refingerprint", stale)
    assert res.exit_code == 2 and "does not match the fingerprint" in res.output
    assert json.loads((stale / "run.json").read_text()) == meta
    shutil.rmtree(mine)
    shutil.copytree(model, mine)

    res = tasksup("refingerprint", tmp_path)  # the checkpoint as it was: both folders below verify
    assert res.exit_code == 0 and f"upgraded: {out}" in res.output and f"upgraded: {stale}" in res.output
    upgraded = json.loads((out / "run.json").read_text())
    assert upgraded["model"]["fingerprint"] == current
    assert upgraded["refingerprinted"][0]["from"] == meta["model"]["fingerprint"]
    assert tasksup("run", COPY_ADD, "--model", mine, "--out", out, *FAST, "--set", "n_prompts=4").exit_code == 0
    assert len(lines(out / "results.jsonl")) == 4


def test_weights_digest_reads_small_files_whole_and_large_ones_by_samples(tmp_path, monkeypatch):
    """Any changed byte changes a small file's digest; above the limit, only the sampled megabytes count."""
    from tasksup.models import wrapper

    mib = wrapper.SAMPLE_BYTES
    data = bytearray(np.random.default_rng(0).integers(0, 256, 5 * mib, dtype=np.uint8).tobytes())

    def digest(changed_at=None):
        body = bytearray(data)
        if changed_at is not None:
            body[changed_at] ^= 1
        path = tmp_path / "model.safetensors"
        path.write_bytes(bytes(body))
        return wrapper.weights_digest(str(path))

    base = digest()
    assert digest(mib + 7) != base  # whole: a byte outside every sample still counts
    monkeypatch.setattr(wrapper, "WHOLE_HASH_BYTES", 4 * mib)
    sampled = digest()
    assert sampled != base and sampled.startswith(f"{5 * mib}:")
    assert digest(7) != sampled and digest(5 * mib // 2) != sampled and digest(5 * mib - 1) != sampled
    assert digest(mib + 7) == sampled  # between the samples: the documented blind spot of large files


def test_every_command_has_an_example_and_flags_show_no_value():
    import typer.main

    def leaves(command, path):
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                yield from leaves(sub, path + [name])
        else:
            yield path

    paths = list(leaves(typer.main.get_command(app), []))
    assert len(paths) >= 12
    for path in paths:
        res = tasksup(*path, "--help")
        assert res.exit_code == 0 and f"Example: tasksup {' '.join(path)} " in res.output, path
        assert "<bool>" not in res.output and "[default: False]" not in res.output, path
