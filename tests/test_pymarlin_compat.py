"""Each fix in pymarlin_compat is needed: with it left out (MARLIN_GLUE_COMPAT_SKIP) the failure it fixes
comes back, and with every fix applied the same code works. Each check runs in a fresh interpreter, since
the fixes act at import time."""
from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest

from conftest import ROOT, python_env
from glue_support import pymarlin_compat


def run(code: str, skip: str = "", *args: str) -> subprocess.CompletedProcess:
    env = python_env()
    env["MARLIN_GLUE_COMPAT_SKIP"] = skip
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


APPLY = "from glue_support import pymarlin_compat; pymarlin_compat.apply(); "  # as the gateway does, then pymarlin
IMPORT_TRAINER = APPLY + "from pymarlin.core.trainer import Trainer, TrainerArguments; print('ok')"
PARSE = ("from glue_support.marlin import CustomArgParser; "  # the parser's fixes alone: no torch to import
         "c = CustomArgParser(default_yamlfile='config.yaml').parse(); "
         "print(repr(c['trainer']['max_train_steps_per_epoch']), repr(c['trainer']['writers']))")
STDOUT_WRITER = (APPLY + "from pymarlin.utils.writer import build_writer, WriterInitArguments; "
                 "build_writer('stdout', WriterInitArguments()).log_scalar('probe/metric', 0.5, 7)")


def test_without_azureml_stub_pymarlin_does_not_import():
    assert "No module named 'azureml'" in run(IMPORT_TRAINER, skip="stub_azureml_run").stderr
    assert run(IMPORT_TRAINER).stdout.strip() == "ok"


def test_without_hashable_defaults_the_trainer_module_fails_on_python_311():
    failed = run(IMPORT_TRAINER, skip="hashable_trainer_defaults")
    assert "mutable default" in failed.stderr and "checkpointer_args" in failed.stderr
    assert run(IMPORT_TRAINER).stdout.strip() == "ok"


def test_null_default_overrides_arrive_typed():
    args = ("--trainer.max_train_steps_per_epoch", "3")
    assert run(PARSE, "typed_null_overrides", *args).stdout.split()[0] == "'3'"
    assert run(PARSE, "", *args).stdout.split()[0] == "3"


def test_list_overrides_are_not_evaluated():
    failed = run(PARSE, "list_overrides_without_eval", "--trainer.writers", "stdout")
    assert "NameError" in failed.stderr
    assert run(PARSE, "", "--trainer.writers", "stdout").stdout.split()[1] == "['stdout']"
    assert run(PARSE, "", "--trainer.writers", "[stdout, tensorboard]").stdout.strip().endswith(
        "['stdout', 'tensorboard']")


DDP_ON_CPU = ("import sys, torch; " + APPLY +
              "from pymarlin.core.trainer_backend import TrainerBackendArguments, build_trainer_backend; "
              "from pymarlin.utils.distributed import DistributedTrainingArguments; "
              "ranks = DistributedTrainingArguments(backend='gloo', init_method='file://' + sys.argv[1]); "
              "backend = build_trainer_backend('ddp'); "
              "backend.init(TrainerBackendArguments(model=torch.nn.Linear(2, 2), device=torch.device('cpu'), "
              "train_batch_size=1, max_train_steps_per_epoch=None, max_val_steps_per_epoch=None, "
              "distributed_training_args=ranks, optimizers=[])); "
              "print(type(backend.trainer_backend.model).__name__, backend.trainer_backend.model.device_ids)")


def test_ddp_backend_runs_on_cpu_with_gloo(tmp_path):
    failed = run(DDP_ON_CPU, "ddp_on_cpu", str(tmp_path / "rendezvous"))
    assert failed.returncode != 0 and ("cuda" in failed.stderr.lower() or "device_ids" in failed.stderr)
    assert run(DDP_ON_CPU, "", str(tmp_path / "rendezvous2")).stdout.split() == ["DistributedDataParallel", "None"]


AMP_BACKEND = """
import sys, torch, warnings
from glue_support import pymarlin_compat
pymarlin_compat.apply()
warnings.simplefilter("error", FutureWarning)
from pymarlin.core.module_interface import Stage
from pymarlin.core.trainer_backend import SingleProcessAmp, TrainerBackendArguments
from pymarlin.utils.distributed import DistributedTrainingArguments

class Linear(torch.nn.Module):
    def forward(self, batch, stage, device, global_step):
        return torch.nn.functional.linear(batch, batch)

backend = SingleProcessAmp()
backend.amp_dtype = getattr(torch, sys.argv[1])
backend.init(TrainerBackendArguments(model=Linear(), device=torch.device("cpu"), train_batch_size=1,
                                     max_train_steps_per_epoch=None, max_val_steps_per_epoch=None,
                                     distributed_training_args=DistributedTrainingArguments(), optimizers=[]))
out = backend._forward(torch.ones(2, 2), Stage.TRAIN, 1)
print(out.dtype, backend.scaler.is_enabled(), "scaler" in backend.get_state())
"""


def test_amp_backend_uses_torch_amp_in_the_chosen_dtype_and_checkpoints_its_scaler():
    """On CPU, bfloat16 autocast runs without a scaler and float16 does nothing, as pymarlin's torch.cuda.amp
    without CUDA; the old backend fails on its torch.cuda.amp FutureWarning (an error here)."""
    assert run(AMP_BACKEND, "torch_amp", "bfloat16").returncode != 0
    assert run(AMP_BACKEND, "", "bfloat16").stdout.split() == ["torch.bfloat16", "False", "True"]
    assert run(AMP_BACKEND, "", "float16").stdout.split() == ["torch.float32", "False", "True"]


PYMARLIN_AMP_TESTS = """
import json, torch
from unittest import mock
from glue_support import pymarlin_compat
pymarlin_compat.apply()
from pymarlin.core import module_interface, trainer_backend
from pymarlin.utils.distributed import DistributedTrainingArguments

def amp_backend(outputs, **changes):
    module = mock.MagicMock(spec=module_interface.ModuleInterface)
    module.forward = mock.MagicMock(side_effect=outputs)
    optimizer = mock.MagicMock(spec=torch.optim.Optimizer)
    args = trainer_backend.TrainerBackendArguments(**{
        "model": module, "device": "cpu", "train_batch_size": 1, "max_train_steps_per_epoch": 1,
        "max_val_steps_per_epoch": 1, "distributed_training_args": DistributedTrainingArguments(),
        "optimizers": [optimizer], "schedulers": [mock.MagicMock()], "gradient_accumulation": 1, "clip_grads": False,
        "disable_tqdm": True, **changes})
    backend = trainer_backend.SingleProcessAmp()
    backend.init(args)
    return backend, module, optimizer

def squared(value):
    x = torch.tensor([float(value)], requires_grad=True)
    return x, [x * x]

batches, callback, passed = [mock.MagicMock()] * 10, mock.MagicMock(), {}
x, loss = squared(1)
backend, module, optimizer = amp_backend([loss])
passed["scaler_off"] = not backend.scaler.is_enabled()
backend.train_dl(batches, callback)
passed["train_dl"] = (module.forward.call_args == mock.call(stage=module_interface.Stage.TRAIN, batch=batches[0],
                                                            device="cpu", global_step=1)
                      and x.grad.item() == 2 and optimizer.step.call_count == optimizer.zero_grad.call_count == 1
                      and callback.on_end_train_step.call_args == mock.call(1, loss[0].detach()))
leaf = [torch.randn(1, requires_grad=True)]  # pymarlin's default loss: backward may run through it twice
backend, module, optimizer = amp_backend([leaf] * 2, gradient_accumulation=2)
backend.train_dl(batches, callback)
passed["gradient_accumulation"] = module.forward.call_count == 2 and optimizer.step.call_count == 1
grads_in_range = []
for value in range(-10, 10):
    x, loss = squared(value)
    backend, module, optimizer = amp_backend([loss], clip_grads=True, max_grad_norm=1)
    module.parameters = mock.MagicMock(return_value=[x])
    backend.train_dl(batches, callback)
    grads_in_range.append(min(0, 2 * value - 1) < x.grad.item() <= 1)
passed["gradient_clipping"] = all(grads_in_range)
losses = [torch.randn(1, requires_grad=True).squeeze() for _ in range(2)] * 2
labels = [torch.randint(0, 10, size=(4, 3)), torch.randint(0, 10, size=(3, 3))] * 2
backend, module, optimizer = amp_backend(list(zip(losses, labels)), max_train_steps_per_epoch=2,
                                         gradient_accumulation=2)
outputs = backend.train_dl(batches, callback)
passed["output_collection"] = (module.forward.call_count == 4 and outputs[0].shape == torch.Size([4])
                               and outputs[1].shape == torch.Size([14, 3]))
backend, module, optimizer = amp_backend([leaf])
backend.validate_dl(batches)
passed["eval_dl"] = module.forward.call_args == mock.call(stage=module_interface.Stage.VAL, batch=batches[0],
                                                          device="cpu", global_step=0)
backend.update_state({"global_step_completed": 1, "batches_completed": 2})
passed["state"] = (backend.get_global_steps_completed(), backend.get_batches_completed()) == (1, 2)
print(json.dumps(passed))
"""


def test_amp_backend_passes_pymarlins_own_amp_tests():
    """pymarlin's tests of its AMP backend (tests/core/test_trainer_backend.py in its repository: a mocked module
    and optimizer on CPU, where its scaler is off) replayed through the fixes. Without CUDA the fixed backend
    answers them as pymarlin's own does; turning the scaler on for float16 on CPU broke the four that train."""
    import torch

    expected = {name: True for name in ("scaler_off", "train_dl", "gradient_accumulation", "gradient_clipping",
                                        "output_collection", "eval_dl", "state")}
    assert json.loads(run(PYMARLIN_AMP_TESTS).stdout) == expected
    if not torch.cuda.is_available():  # with CUDA, pymarlin's own scaler is on whatever the device
        assert json.loads(run(PYMARLIN_AMP_TESTS, "torch_amp").stdout) == expected


def test_each_metric_line_prints_once():
    assert run(STDOUT_WRITER, skip="single_log_lines").stderr.count("probe/metric") == 2
    assert run(STDOUT_WRITER).stderr.count("probe/metric") == 1


@pytest.mark.parametrize("text, expected", [("3", 3), ("2.0e-5", 2e-5), ("null", None), ("None", None),
                                            ("true", True), ("some/path", "some/path")])
def test_null_default_values_are_read_as_yaml_scalars(text, expected):
    assert pymarlin_compat._yaml_scalar(text) == expected


PYMARLIN_FORMS = """
import sys
from glue_support.marlin import CustomArgParser
print(repr(CustomArgParser(default_yamlfile=sys.argv[1]).parse()["test"]))
"""


@pytest.mark.parametrize("args, expected", [
    # pymarlin's own test of its parser (tests/utils/test_config_parser.py in its repository)
    (["--test.test_true", "t", "--test.test_false", "false", "--test.test_str", "this is a test str."],
     {"test_true": True, "test_false": False, "test_str": "this is a test str."}),
    (["--test.test_list_str", "['a', 'b']"], {"test_list_str": ["a", "b"]}),  # a Python list literal
    (["--test.test_list_int", "1-2-3"], {"test_list_int": [1, 2, 3]}),  # pymarlin's dash form
    (["--test.test_list_str", "a-b"], {"test_list_str": ["a", "b"]}),
    (["--test.test_list_float", "[0.5, 2]"], {"test_list_float": [0.5, 2.0]}),
    (["--test.test_list_float", "-1.5"], {"test_list_float": [-1.5]}),  # one negative number, not a dash list
    (["--test.test_list_float", "2e-5"], {"test_list_float": [2e-5]}),  # a number YAML 1.1 reads as text
])
def test_pymarlins_documented_forms_still_parse(tmp_path, args, expected):
    """The compat fixes change only what is broken: the forms pymarlin documents and tests keep working."""
    config = tmp_path / "config.yaml"
    config.write_text("test:\n  test_float: -1.0\n  test_list_float: [-1.0, -1.0]\n  test_list_int: [-1, -1]\n"
                      "  test_list_str: ['this', 'is']\n  test_str: null\n  test_true: False\n  test_false: True\n")
    parsed = ast.literal_eval(run(PYMARLIN_FORMS, "", str(config), *args).stdout)
    assert {key: parsed[key] for key in expected} == expected


@pytest.mark.parametrize("value, expected", [
    ("2.5", "'2.5' is not a list of int: give one int or several, as 3, 3,5 or [3, 5]"),
    ("[2.5]", "'[2.5]' is not a list of int"),  # YAML's float, which int() would cut to 2
    ("3,x", "'3,x' is not a list of int"),
    ("{a: 1}", "'{a: 1}' is not a list of int"),
    ("[3", "'[3' is not a list of int"),
    ("[[3]]", "'[[3]]' is not a list of int"),
])
def test_a_list_option_of_another_type_is_refused_saying_what_it_takes(tmp_path, value, expected):
    config = tmp_path / "config.yaml"
    config.write_text("test:\n  test_list_int: [-1, -1]\n")
    failed = run(PYMARLIN_FORMS, "", str(config), "--test.test_list_int", value)
    assert failed.returncode != 0 and f"argument --test.test_list_int: {expected}" in failed.stderr


def test_an_invalid_boolean_still_stops_the_parser(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("test:\n  test_true: False\n")
    failed = run(PYMARLIN_FORMS, "", str(config), "--test.test_true", "fl")
    assert failed.returncode != 0 and "Boolean value expected" in failed.stderr


def test_ddp_keeps_pymarlins_find_unused_parameters_default():
    code = ("from glue_support.marlin import build_trainer_backend; "
            "print(build_trainer_backend('ddp').find_unused_parameters)")
    assert run(code).stdout.strip() == "True"


def test_project_code_imports_pymarlin_only_through_the_gateway():
    """glue_support.marlin applies the fixes before pymarlin's first line runs; a direct ``import pymarlin``
    elsewhere could run first and fail (fix 2), depending on import order."""
    direct = []
    for path in ROOT.rglob("*.py"):
        if {".venv", "tests"} & set(path.relative_to(ROOT).parts) or path.name == "pymarlin_compat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            direct += [f"{path.relative_to(ROOT)}: {name}" for name in names if name.split(".")[0] == "pymarlin"]
    assert not direct


@pytest.mark.parametrize("modules", [
    "train, data", "data, train", "glue_support.checkpoints, train", "glue_support.command_line, data, train",
    "glue_support.mlflow_writer, glue_processors, train",
])
def test_any_import_order_gets_the_fixed_trainer(modules):
    code = (f"import {modules}; from glue_support.marlin import Trainer, TrainerArguments; "
            "print(Trainer.__module__, TrainerArguments().checkpointer_args.__hash__ is not None)")
    assert run(code).stdout.split() == ["pymarlin.core.trainer", "True"]


def test_the_config_parser_and_the_logger_load_without_torch():
    code = ("import sys; from glue_support.marlin import CustomArgParser, getlogger; "
            "print('torch' in sys.modules, 'pymarlin.core.trainer' in sys.modules)")
    assert run(code).stdout.split() == ["False", "False"]
