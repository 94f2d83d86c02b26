"""An output folder belongs to one run: an earlier run's outputs are replaced only when asked, an unwritable folder
or a full disk stops train.py before training, a second run into a folder in use is refused before the model loads, the
lock goes with the process holding it, an overwriting run sets the earlier run's outputs aside so that the folder
never holds two runs' files whatever moment it is killed at, and what killed runs leave is removed by the next run
(by download_glue.py too). train.py's ``main()`` runs in-process on a tiny random BERT, one epoch of 4 steps."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import download_glue
import train
from conftest import ROOT, featurize, python_env, run_train, write_rte_subset
from glue_support import output_folder, result_files

LOCK = output_folder.LOCK_FILE
USER_FILE = "notes.txt"  # the user's own file in an output folder: never moved nor removed
# holds a folder as a run does, says so on stdout, then waits (for its stdin to close, or to be killed)
HOLDER = """import sys
from glue_support import output_folder
with output_folder.own_output_dir(sys.argv[1], overwrite=False, resuming=False, is_main=True):
    print("holding", flush=True)
    sys.stdin.read()
"""


class Killed(BaseException):
    """A kill -9 at this point: the run's code does not go on. (atomic_write's temporaries are still removed as the
    exception passes: killed runs' temporaries are another test's.)"""


@pytest.fixture(scope="module")
def features(tiny_bert, tmp_path_factory) -> dict[str, Path]:
    raw = write_rte_subset(tmp_path_factory.mktemp("RTE"), train_rows=32, dev_rows=16)
    folder = tmp_path_factory.mktemp("features")
    return {set_type: featurize(raw, folder / set_type, tiny_bert, "RTE", set_type).parent
            for set_type in ("train", "dev")}


def run(tiny_bert, features, output, *extra, seed: int = 1) -> train.Recipe:
    """train.py into ``output``: 32 examples, batches of 8, one epoch."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["train.py", *map(str, (
            "--model.hf_model", tiny_bert, "--tmod.trainpath", features["train"], "--tmod.valpath", features["dev"],
            "--tmod.output_dir", output, "--tmod.seed", seed, "--tmod.max_lr", "1.0e-3", "--trainer.epochs", 1,
            "--trainer.train_batch_size", 8, "--trainer.disable_tqdm", "true", *extra))])
        return train.main()


def visible(folder: Path) -> dict[str, str]:
    """What tells runs apart in ``folder``, by file (left out: TensorBoard logs, named by start time, hidden entries
    and USER_FILE): run_config.yaml's seed, results.json's and history.json's numbers, every other file's SHA-256."""
    found = {}
    for path in sorted(folder.rglob("*")):
        name, parts = str(path.relative_to(folder)), path.relative_to(folder).parts
        if path.is_dir() or parts[0] in (USER_FILE, "logs") or any(part.startswith(".") for part in parts):
            continue
        if name == "run_config.yaml":
            found[name] = f"seed {yaml.safe_load(path.read_text())['tmod']['seed']}"
        elif name in ("results.json", "history.json"):
            found[name] = json.dumps(json.loads(path.read_text())["dev.tsv"])
        else:
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def runs_in(folder: Path, references: dict[str, dict[str, str]]) -> set[str]:
    """The runs whose files ``folder`` holds: a file the same in every reference run (the tokenizer, the model's
    config) tells nothing; one that is in no reference run is a foreign file."""
    owners = set()
    for name, fingerprint in visible(folder).items():
        matches = {run for run, files in references.items() if files.get(name) == fingerprint}
        owners |= matches if len(matches) < len(references) else set()
        if not matches:
            owners.add(f"foreign: {name}")
    return owners


def hidden(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob(".*"))


@pytest.fixture(scope="module")
def earlier_and_replacing(tiny_bert, features, tmp_path_factory) -> tuple[Path, dict[str, dict[str, str]]]:
    """A finished run with seed 1 and checkpoints (the earlier run), and the files of a finished run with seed 2
    (the one replacing it) written elsewhere."""
    earlier = tmp_path_factory.mktemp("earlier") / "out"
    run(tiny_bert, features, earlier, "--ckpt.checkpoint", "true", seed=1)
    replacing = tmp_path_factory.mktemp("replacing") / "out"
    run(tiny_bert, features, replacing, seed=2)
    assert (earlier / "checkpoints").is_dir() and (earlier / "results.json").is_file()
    references = {"earlier": visible(earlier), "replacing": visible(replacing)}
    assert references["earlier"]["results.json"] != references["replacing"]["results.json"]
    assert references["earlier"]["model.safetensors"] != references["replacing"]["model.safetensors"]
    return earlier, references


def hold(folder: Path) -> subprocess.Popen:
    """A process holding ``folder`` as a run does, once it says so."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env=python_env(), text=True)
    assert holder.stdout.readline() == "holding\n"
    return holder


def test_a_second_run_is_refused_before_the_model_loads_and_the_lock_goes_with_a_killed_holder(
        tiny_bert, features, tmp_path, monkeypatch):
    output = tmp_path / "out"
    holder = hold(output)
    try:
        (output / ".staging.live").mkdir()  # the holder's model being saved: not the refused run's to remove
        loaded = []
        with monkeypatch.context() as patch:
            patch.setattr(train.Recipe, "__init__", lambda *args: loaded.append(args))
            refused = rf"{re.escape(str(output))} is in use by another run \(pid {holder.pid} on .+\): wait for it " \
                      r"to end, or choose another --tmod.output_dir"
            with pytest.raises(ValueError, match=refused):
                run(tiny_bert, features, output)
        assert loaded == [] and (output / ".staging.live").is_dir()
    finally:
        holder.kill()  # kill -9: no code of the holder's runs on
        holder.wait()
    recipe = run(tiny_bert, features, output)
    assert json.loads((output / "results.json").read_text())["dev.tsv"] == recipe.results["dev.tsv"]
    assert hidden(output) == [LOCK]  # the killed holder's staging folder removed


@pytest.mark.slow
def test_under_torchrun_rank_0_is_refused_and_torchrun_stops_the_other_rank(tiny_bert, features, tmp_path):
    output = tmp_path / "out"
    holder = hold(output)
    try:
        result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                                 str(ROOT / "train.py"), "--model.hf_model", tiny_bert, "--tmod.valpath",
                                 str(features["dev"]), "--tmod.output_dir", str(output)],
                                cwd=tmp_path, env=python_env(), capture_output=True, text=True, timeout=600)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode != 0
    assert f"{output} is in use by another run (pid {holder.pid} on " in result.stderr
    assert not (output / "results.json").exists()


@pytest.mark.parametrize("error", [OSError(errno.ENOLCK, "No locks available"), None])
def test_where_the_folder_cannot_be_locked_the_run_goes_on_with_a_warning(tmp_path, monkeypatch, caplog, error):
    def refuse(*args):
        raise error

    if error:
        monkeypatch.setattr(output_folder.fcntl, "flock", refuse)
    else:
        monkeypatch.setattr(output_folder, "fcntl", None)  # as on Windows
    with caplog.at_level("WARNING"), output_folder.own_output_dir(str(tmp_path), False, False, True):
        assert (tmp_path / LOCK).read_text().startswith(f"pid {os.getpid()} on ")
    reason = "No locks available" if error else "no fcntl.flock on this platform"
    assert f"{tmp_path}: cannot lock it ({reason}): a second run started there would not be refused" in caplog.text


def kill_at(patch, owner, name: str, when, call: int = 1, after: bool = False) -> None:
    """``owner.name`` raises Killed at its ``call``-th call for which ``when(*its arguments)``: instead of running, or
    ``after`` it has run."""
    original, matched = getattr(owner, name), []

    def killed(*args, **kwargs):
        if when(*args, **kwargs):
            matched.append(args)
            if len(matched) == call:
                if after:
                    original(*args, **kwargs)
                raise Killed(name)
        return original(*args, **kwargs)
    patch.setattr(owner, name, killed)


KILL_POINTS = {  # call=2: killed with one output already moved aside, one model file already moved in
    "while setting the earlier outputs aside": lambda patch: kill_at(
        patch, os, "replace", lambda source, target: output_folder.MOVING in str(target), call=2),
    "after setting them aside": lambda patch: kill_at(
        patch, output_folder.OwnedOutputDir, "set_aside_earlier", lambda self: True, after=True),
    "after results.json": lambda patch: kill_at(
        patch, result_files, "write_json", lambda path, content: path.endswith("results.json"), after=True),
    "while moving the model in": lambda patch: kill_at(
        patch, os, "replace", lambda source, target: ".staging." in str(source), call=2),
    "before removing the earlier outputs": lambda patch: kill_at(
        patch, shutil, "rmtree", lambda path, *args, **kwargs: os.path.basename(path).startswith(output_folder.ASIDE)),
}


@pytest.mark.parametrize("kill_point", KILL_POINTS)
def test_a_run_killed_while_overwriting_never_leaves_two_runs_files_and_the_next_run_cleans_up(
        tiny_bert, features, earlier_and_replacing, tmp_path, monkeypatch, kill_point):
    earlier, references = earlier_and_replacing
    output = tmp_path / "out"
    shutil.copytree(earlier, output)
    (output / USER_FILE).write_text("mine")
    with monkeypatch.context() as patch:
        KILL_POINTS[kill_point](patch)
        with pytest.raises(Killed):
            run(tiny_bert, features, output, "--tmod.overwrite_output_dir", "true", seed=2)
    assert len(runs_in(output, references)) <= 1, visible(output)

    # the same command, resumed: it finds none of the earlier run's checkpoints, so it trains from the start
    run(tiny_bert, features, output, "--tmod.overwrite_output_dir", "true", "--ckpt.resume", "true", seed=2)
    assert visible(output) == references["replacing"]
    assert (output / USER_FILE).read_text() == "mine"
    assert hidden(output) == [LOCK]


def make(folder: Path, names: list[str]) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("x")


def test_what_killed_runs_left_is_removed_by_the_next_run_and_nothing_else(tiny_bert, features, tmp_path):
    output = tmp_path / "out"
    left = [".staging.x/model.safetensors", ".results.json.abc.tmp", "checkpoints/.marlin_glue_step00000004.pt.abc.tmp",
            "submission/.RTE.tsv.abc.tmp", ".overwritten.abc/results.json", ".overwritten.def.moving/config.json"]
    kept = ["notes.tmp", ".keep", ".staging", ".x.tmp/file", "staging.x/file", ".overwritten"]
    make(output, left + kept)
    run(tiny_bert, features, output)  # not refused: an empty checkpoints/ or submission/ is no earlier run's output
    assert [name for name in left if (output / name).exists()] == []
    assert [name for name in kept if not (output / name).exists()] == []


def test_download_glue_removes_what_an_interrupted_download_left_and_nothing_else(tmp_path):
    data_dir = tmp_path / "glue_data"
    left = [".RTE.zip.k2j3h4.part", ".RTE.a1b2.staging/train.tsv"]
    kept = ["RTE/train.tsv", "RTE/dev.tsv", "RTE/test.tsv", "notes.part", ".RTE.zip", "RTE.staging/x", ".x.part/y"]
    make(data_dir, left + kept)
    results = download_glue.download("RTE", str(data_dir), "http://127.0.0.1:9/", checksums={})
    assert [result.status for result in results] == ["present"]  # nothing fetched
    assert [name for name in left if (data_dir / name).exists()] == []
    assert [name for name in kept if not (data_dir / name).exists()] == []


def test_an_earlier_run_is_not_overwritten_unless_asked(argv, tiny_bert, features, tmp_path):
    output = tmp_path / "out"
    run_train(argv, tiny_bert, features, output, epochs=1)
    first = (output / "results.json").read_text()
    assert yaml.safe_load((output / "run_config.yaml").read_text())["tmod"]["output_dir"] == str(output)
    with pytest.raises(ValueError, match=r"already holds a run's outputs \(results.json, history.json, "
                                         r"dev_predictions.json, config.json, model.safetensors, .*\): choose another "
                                         r"--tmod.output_dir, or pass --tmod.overwrite_output_dir true to replace "
                                         r"them$"):
        run_train(argv, tiny_bert, features, output, "--tmod.seed", 3, epochs=1)
    assert (output / "results.json").read_text() == first
    second = run_train(argv, tiny_bert, features, output, "--tmod.seed", 3, "--tmod.overwrite_output_dir", "true",
                       epochs=1)
    assert json.loads((output / "results.json").read_text())["dev.tsv"] == second.results["dev.tsv"]
    # the earlier run's outputs, TensorBoard logs included, were set aside, then removed
    assert len(list((output / "logs").iterdir())) == 1
    assert [path.name for path in output.iterdir() if path.name.startswith(".")] == [output_folder.LOCK_FILE]


def test_an_unwritable_output_dir_or_a_full_disk_stops_before_training(argv, tiny_bert, features, tmp_path,
                                                                       monkeypatch):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(SystemExit, match=r"^--tmod.output_dir .*a-file/out: .*a-file is a file, expected a folder "
                                         r"\(the run's outputs\)$"):
        run_train(argv, tiny_bert, features, tmp_path / "a-file" / "out")

    trained = []
    monkeypatch.setattr(train.CheckpointingTrainer, "train", lambda self: trained.append(1))
    monkeypatch.setattr(output_folder.shutil, "disk_usage",
                        lambda path: shutil._ntuple_diskusage(10 ** 9, 10 ** 9 - 2 ** 20, 2 ** 20))
    with pytest.raises(ValueError, match=r"out: 1 MiB free on its disk; the fine-tuned model and \d+ checkpoints need "
                                         r"about \d+ MiB: free some space, or choose another --tmod.output_dir"):
        run_train(argv, tiny_bert, features, tmp_path / "out", "--ckpt.checkpoint", "true")
    assert trained == []
