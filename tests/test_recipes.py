"""The field's recipes (recipes/<name>.yaml, --bench.recipe): each expands to its paper's runs per task, the command
line still overrides it, values reach train.py only where they differ from its defaults, the "best" selection rule."""
from __future__ import annotations

import types

import pytest

import benchmark
from glue_support import benchmark_plan, selection
from glue_support.command_line import parse_config
from glue_support.exit_codes import ConfigError

ALL_TASKS = ("CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI")


def planned(argv, *options, tasks="all"):
    """benchmark.py's config and plan for ``options`` on the command line, nothing run or read."""
    argv("--tasks", tasks, *options)
    config = parse_config(benchmark.BENCHMARK_CONFIG, short_group="bench")
    config = benchmark_plan.apply_recipe(config, benchmark.given_options(config), benchmark.BENCHMARK_CONFIG)
    args = benchmark_plan.BenchmarkArguments(**config["bench"])
    runs = benchmark_plan.plan(args, config, benchmark_plan.parse_tasks(args, check_files=False))
    return args, config, runs


def per_task(runs):
    counts = {}
    for run in runs:
        counts[run.spec.name] = counts.get(run.spec.name, 0) + 1
    return counts


@pytest.mark.parametrize("recipe, runs_per_task, rule", [
    ("bert", 4 * 1 * 1, "best"),  # 4 learning rates x batch 32, one fine-tune each, the best on dev
    ("roberta", 3 * 2 * 5, "median"),  # 3 learning rates x 2 batch sizes x 5 seeds, their median
    ("electra", 1 * 10, "median"),  # one setting, the median of 10 runs
    ("deberta-v3", 1 * 3, "mean"),  # the model card's one setting; seeds and rule the benchmark's
])
def test_a_recipe_expands_to_its_papers_runs_for_every_task(argv, recipe, runs_per_task, rule):
    args, _, runs = planned(argv, "--recipe", recipe)
    assert per_task(runs) == dict.fromkeys(ALL_TASKS, runs_per_task) and args.select == rule


def test_each_recipe_sets_its_papers_values(argv):
    _, _, runs = planned(argv, "--recipe", "roberta")
    rte = [run for run in runs if run.spec.name == "RTE"]
    assert {run.settings.init_from for run in runs if run.spec.name in ("RTE", "STS-B", "MRPC")} == {"MNLI"}
    assert {run.settings.init_from for run in runs if run.spec.name not in ("RTE", "STS-B", "MRPC")} == {""}
    assert sorted({(run.settings.max_lr, run.settings.batch_size) for run in rte}) == [
        (1e-5, 16), (1e-5, 32), (2e-5, 16), (2e-5, 32), (3e-5, 16), (3e-5, 32)]
    assert {(run.settings.epochs, run.settings.warmup_prop, run.settings.weight_decay, run.settings.max_seq_len)
            for run in runs} == {(10, 0.06, 0.1, 512)}
    assert max(runs.index(run) for run in runs if run.spec.name == "MNLI") < min(runs.index(run) for run in rte)

    _, _, runs = planned(argv, "--recipe", "electra")
    epochs = {run.spec.name: run.settings.epochs for run in runs}
    assert epochs == {**dict.fromkeys(ALL_TASKS, 3), "RTE": 10, "STS-B": 10}
    assert {(run.settings.max_lr, run.settings.layer_lr_decay, run.settings.weight_decay) for run in runs} == {
        (1e-4, 0.8, 0.0)}


def test_the_command_line_overrides_a_recipe(argv):
    args, config, runs = planned(argv, "--recipe", "roberta", "--rte.max_lr", "2.0e-5", "--rte.init_from", "",
                                 "--seeds", 2, "--bench.select", "mean", "--stsb.weight_decay", 0.01)
    rte = [run for run in runs if run.spec.name == "RTE"]
    assert len(rte) == 1 * 2 * 2 and {run.settings.max_lr for run in rte} == {2e-5}
    assert {run.settings.init_from for run in rte} == {""}  # benchmark.yaml's value, given: kept
    assert args.select == "mean" and config["stsb"]["weight_decay"] == 0.01 and config["mrpc"]["weight_decay"] == 0.1
    assert per_task(runs)["MRPC"] == 3 * 2 * 2


def test_recipe_values_reach_train_py_only_where_they_differ_from_its_defaults(argv):
    args, _, runs = planned(argv, "--recipe", "electra", tasks="RTE")
    command = benchmark.train_command(args, runs[0], resume=False)
    options = dict(zip(command[2::2], command[3::2]))
    assert options["--tmod.layer_lr_decay"] == "0.8" and options["--tmod.weight_decay"] == "0.0"
    assert "--tmod.warmup_prop" not in options  # 0.1: config.yaml's, as without the recipe
    assert runs[0].folder.endswith("lr0.0001-bs32-ep10-len128-wd0.0-lld0.8/seed42")
    identity = benchmark_plan.run_identity(args, runs[0], {}, {})
    assert (identity["weight_decay"], identity["layer_lr_decay"]) == (0.0, 0.8) and "warmup_prop" not in identity
    assert benchmark_plan.recorded_cell(identity) == "lr0.0001-bs32-ep10-len128-wd0.0-lld0.8"

    args, _, runs = planned(argv, tasks="RTE")  # no recipe: the command and identity of every earlier run
    command = benchmark.train_command(args, runs[0], resume=False)
    assert not [part for part in command if part.split(".")[-1] in benchmark_plan.TRAIN_KEYS]
    assert runs[0].folder.endswith("lr5e-05-bs16-ep5-len128/seed42")
    assert not set(benchmark_plan.run_identity(args, runs[0], {}, {})) & set(benchmark_plan.TRAIN_KEYS)


def test_help_lists_the_recipes_of_the_folder(argv, capsys):
    assert benchmark_plan.recipe_names() == ["bert", "deberta-v3", "electra", "roberta"]
    argv("--help")
    with pytest.raises(SystemExit) as done:
        benchmark.main()
    assert done.value.code == 0
    assert "Recipes (--recipe <name>, the files of recipes/): bert, deberta-v3, electra, roberta" in (
        capsys.readouterr().out)


def test_every_recipe_value_names_its_source():
    for name in benchmark_plan.recipe_names():
        path = f"{benchmark_plan.RECIPES}/{name}.yaml"
        for number, line in enumerate(open(path, encoding="utf-8").read().splitlines(), 1):
            if line.startswith(" ") and line.strip():
                assert "# " in line, f"{path}, line {number}: a value without its source"


def test_a_bad_recipe_is_refused_in_one_line_naming_its_file(argv, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"--bench.recipe albert: no such recipe; expected one of: bert, "):
        planned(argv, "--recipe", "albert")
    monkeypatch.setattr(benchmark_plan, "RECIPES", str(tmp_path))
    (tmp_path / "mine.yaml").write_text("all_tasks:\n  max_lr: [1.0e-5]\n  learning_rate: 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"mine.yaml, line 3: all_tasks sets learning_rate; expected a mapping of "):
        planned(argv, "--recipe", "mine")
    (tmp_path / "mine.yaml").write_text("rte:\n  max_lr: [1.0e-5, -1]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"mine.yaml: --rte.max_lr -1: expected a number > 0"):
        planned(argv, "--recipe", "mine")
    (tmp_path / "mine.yaml").write_text("bench:\n  select: best\nrtee:\n  epochs: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"mine.yaml, line 3: unknown group 'rtee'"):
        planned(argv, "--recipe", "mine")


def test_the_best_rule_selects_the_cell_of_the_best_single_run():
    def cell(name, *scores):
        return selection.Cell(name, {}, tuple(types.SimpleNamespace(score=score) for score in scores))

    lucky, steady = cell("lucky", 0.70, 0.50, 0.50), cell("steady", 0.60, 0.60, 0.60)
    assert lucky.score.best == pytest.approx(70.0)
    assert selection.best_cell((lucky, steady), "best") is lucky
    assert selection.best_cell((lucky, steady), "mean") is steady
    assert selection.best_cell((lucky, steady), "median") is steady
