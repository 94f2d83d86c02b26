"""The task table and the reader of GLUE files: the official layouts read exactly; malformed rows stop data.py naming
file and line, or are left out, each reported, with --dproc.skip_malformed true."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import zipfile

import pytest

import data
import download_glue
import glue_metrics
from conftest import FIXTURES, MODEL, ROOT, python_env, write_finished_run
from glue_processors import GLUE_URL, TASKS, Download, GlueFormatError, GlueProcessor, get_task
from glue_support import scoreboard, selection

SHARED_GLUE = ROOT.parent / "shared" / "glue_data"

# task, set_type -> (rows, (text_a, text_b, label, index) of the first row): read off the fixture files.
FIRST_ROWS = {
    ("CoLA", "train"): (6, ("Our friends won't buy this analysis, let alone the next one we propose.", None, "1", 0)),
    ("CoLA", "dev"): (6, ("The sailors rode the breeze clear of the rocks.", None, "1", 0)),
    ("CoLA", "test"): (6, ("Bill whistled past the house.", None, None, 0)),
    ("SST-2", "train"): (6, ("hide new secretions from the parental units ", None, "0", 0)),
    ("SST-2", "dev"): (6, ("it 's a charming and often affecting journey . ", None, "1", 0)),
    ("SST-2", "test"): (6, ("uneasy mishmash of styles and genres .", None, None, 0)),
    ("MRPC", "train"): (6, ("Amrozi accused his brother , whom he called \" the witness \" , of deliberately "
                            "distorting his evidence .",
                            "Referring to him as only \" the witness \" , Amrozi accused his brother of "
                            "deliberately distorting his evidence .", "1", 0)),
    ("MRPC", "dev"): (6, ("He said the foodservice pie business doesn 't fit the company 's long-term growth "
                          "strategy .",
                          "\" The foodservice pie business does not fit our long-term growth strategy .", "1", 0)),
    ("MRPC", "test"): (6, ("PCCW 's chief operating officer , Mike Butcher , and Alex Arena , the chief financial "
                           "officer , will report directly to Mr So .", "Current Chief Operating Officer Mike Butcher "
                           "and Group Chief Financial Officer Alex Arena will report to So .", None, 0)),
    ("STS-B", "train"): (479, ("A woman picks up and holds a baby kangaroo.",
                               "A woman picks up and holds a baby kangaroo in her arms.", "4.600", 11)),
    ("STS-B", "dev"): (200, ("A man is erasing a chalk board.", "The man is erasing the chalk board.", "5.000", 6)),
    ("STS-B", "test"): (6, ("A girl is styling her hair.", "A girl is brushing her hair.", None, 0)),
    ("QQP", "dev"): (4, ("What is the best way to learn algebra?", "How can I learn algebra quickly?", "1", 40066)),
    ("QQP", "test"): (3, ("Why do rockets look white?", "Why are rockets and boosters painted white?", None, 0)),
    ("MNLI", "train"): (8, ("Conceptually cream skimming has two basic dimensions - product and geography.",
                            "Product and geography are what make cream skimming work. ", "neutral", 0)),
    ("MNLI", "dev_matched"): (6, ("The new rights are nice enough", "Everyone really likes the newest benefits ",
                                  "neutral", 0)),
    ("MNLI", "dev_mismatched"): (5, ("Your contribution helped make it possible for us to provide our students with "
                                     "a quality education.", "Your contributions were of no help with our students' "
                                     "education.", "contradiction", 0)),
    ("MNLI", "test_matched"): (3, ("Hierbas, ans seco, ans dulce, and frigola are just a few names worth keeping a "
                                   "look-out for.", "Hierbas is a name worth looking out for.", None, 0)),
    ("MNLI", "test_mismatched"): (4, ("What have you decided, what are you going to do?", "So what's your decision?",
                                      None, 0)),
    ("QNLI", "train"): (5, ("When did the third Digimon series begin?", "Unlike the two seasons before it and most of "
                            "the seasons that followed, Digimon Tamers takes a darker and more realistic approach to "
                            "its story featuring Digimon who do not reincarnate after their deaths and more complex "
                            "character development in the original Japanese.", "not_entailment", 0)),
    ("QNLI", "dev"): (4, ("What came into force after the new constitution was herald?", "As of that day, the new "
                          "constitution heralding the Second Republic came into force.", "entailment", 0)),
    ("QNLI", "test"): (3, ("What organization is devoted to Jihad against Israel?", "For some decades prior to the "
                           "First Palestine Intifada in 1987, the Muslim Brotherhood in Palestine took a \"quiescent\" "
                           "stance towards Israel.", None, 0)),
    ("RTE", "train"): (6, ("No Weapons of Mass Destruction Found in Iraq Yet.",
                           "Weapons of Mass Destruction Found in Iraq.", "not_entailment", 0)),
    ("RTE", "dev"): (6, ("Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44, "
                         "according to the Christopher Reeve Foundation.", "Christopher Reeve had an accident.",
                         "not_entailment", 0)),
    ("RTE", "test"): (6, ("Mangla was summoned after Madhumita's sister Nidhi Shukla, who was the first witness in the "
                          "case.", "Shukla is related to Mangla.", None, 0)),
    ("WNLI", "train"): (5, ("I stuck a pin through a carrot. When I pulled the pin out, it had a hole.",
                            "The carrot had a hole.", "1", 0)),
    ("WNLI", "dev"): (3, ("The drain is clogged with hair. It has to be cleaned.", "The hair has to be cleaned.",
                          "0", 0)),
    ("WNLI", "test"): (2, ("Maude and Dora had seen the trains rushing across the prairie, with long, rolling puffs "
                           "of black smoke streaming back from the engine. Their roars and their wild, clear whistles "
                           "could be heard from far away. Horses ran away when they came in sight.",
                           "Horses ran away when Maude and Dora came in sight.", None, 0)),
    ("AX", "test"): (3, ("The cat sat on the mat.", "The cat did not sit on the mat.", None, 0)),
    ("AX", "diagnostic"): (3, ("The cat sat on the mat.", "The cat did not sit on the mat.", None, 0)),
}


def read(task: str, folder, set_type: str):
    return GlueProcessor(task).process(str(folder), set_type)


def test_reads_the_shipped_rte_files_row_for_row():
    train, dev = read("RTE", ROOT / "RTE", "train"), read("RTE", ROOT / "RTE", "dev")
    assert (len(train), len(dev)) == (2490, 277)
    assert sum(example.label == "entailment" for example in train) == 1249
    first = train[0]
    assert (first.text_a, first.text_b, first.label, first.index) == (
        "No Weapons of Mass Destruction Found in Iraq Yet.", "Weapons of Mass Destruction Found in Iraq.",
        "not_entailment", 0)


def test_the_summary_gives_the_count_and_label_distribution():
    processor = GlueProcessor("RTE")
    processor.process(str(ROOT / "RTE"), "train")
    assert processor.summary() == "RTE: 2490 examples; labels entailment: 1249, not_entailment: 1241"


def test_the_task_table_covers_glue():
    assert {spec.name for spec in TASKS.values()} == {
        "CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI", "AX"}
    assert get_task("sts-b").is_regression and get_task("STS-B").labels is None
    assert get_task("mnli").labels == ("contradiction", "entailment", "neutral")


@pytest.mark.parametrize("task, dev_set_types", [("RTE", ("dev",)), ("MNLI", ("dev_matched", "dev_mismatched")),
                                                  ("AX", ())])
def test_the_labeled_validation_files_leave_out_train_and_the_test_sets(task, dev_set_types):
    assert get_task(task).dev_set_types == dev_set_types


def test_adding_a_task_is_one_row(tmp_path, monkeypatch):
    """One row added to TASKS (RTE's layout, its own metric, label, download and alias) is read by every script
    that knows about tasks: the reader, the metrics, the scoreboard and the downloader."""
    spec = dataclasses.replace(get_task("RTE"), name="RTE2", metric="accuracy_and_f1",
                               metric_label="F1/acc (RTE2)", hf_name="rte2", aliases=("rte-two",),
                               download=Download("RTE2", "zip", (("RTE2.zip", GLUE_URL),),
                                                 ("train.tsv", "dev.tsv", "test.tsv")))
    monkeypatch.setitem(TASKS, "rte2", spec)
    assert get_task("rte2") is spec and spec.dev_set_types == ("dev",)

    served = tmp_path / "served"
    served.mkdir()
    with zipfile.ZipFile(served / "RTE2.zip", "w") as bundle:
        for name in spec.download.files:
            bundle.write(FIXTURES / "RTE" / name, f"RTE2/{name}")
    assert download_glue.resolve_tasks("rte-two,RTE2") == ["RTE2"]
    [result] = download_glue.download("rte-two", str(tmp_path / "glue"), served.as_uri(), checksums={})
    assert (result.task, result.status, result.folder) == ("RTE2", "downloaded", str(tmp_path / "glue" / "RTE2"))

    examples = read("RTE2", tmp_path / "glue" / "RTE2", "dev")
    assert len(examples) == 6 and examples[0].label == "not_entailment"
    assert glue_metrics.compute("RTE2", [0, 1, 1, 0], [0, 1, 0, 0]) == pytest.approx(
        {"accuracy": 0.75, "f1": 2 / 3, "combined_score": (0.75 + 2 / 3) / 2})
    write_finished_run(tmp_path / "bench", "RTE2", 1, {"dev.tsv": {"accuracy": 0.5, "f1": 0.7}})
    chosen = selection.select(str(tmp_path / "bench"), "RTE2")
    summary = scoreboard.summarize(str(tmp_path), {"RTE2": chosen}, MODEL, str(tmp_path / "no-references.json"))
    assert summary.to_json()["tasks"]["RTE2"]["metric"] == "F1/acc (RTE2)"
    assert chosen.run.score == pytest.approx(0.6)


def test_every_task_names_a_metric_function():
    assert {spec.metric for spec in TASKS.values()} <= set(glue_metrics.METRICS)


def test_the_task_table_loads_without_torch_transformers_sklearn_or_scipy():
    """The commands that do not train read the table; they must start without the heavy libraries."""
    code = ("import sys, glue_processors, glue_metrics, download_glue; from glue_support import scoreboard; "
            "print(sorted({name.partition('.')[0] for name in sys.modules} & "
            "{'torch', 'transformers', 'sklearn', 'scipy'}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=python_env(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_task_table_imports_nothing_of_the_project_but_the_check_every_read_goes_through():
    code = ("import sys, glue_processors; print(sorted(name for name in sys.modules if name.partition('.')[0] in "
            "{'glue_support', 'glue_metrics', 'data', 'train', 'benchmark', 'filegen_dataloaders'}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=python_env(), capture_output=True, text=True,
                            timeout=60)
    assert (result.returncode, result.stdout.strip()) == (
        0, "['glue_support', 'glue_support.exit_codes', 'glue_support.path_checks']"), result.stderr


def test_every_set_type_of_every_task_has_an_official_layout_fixture():
    expected = {(spec.name, set_type) for spec in TASKS.values() for set_type in spec.set_types}
    assert expected - {("QQP", "train")} == set(FIRST_ROWS)  # QQP train: the malformed-row tests below
    assert all((FIXTURES / task / f"{set_type}.tsv").is_file() for task, set_type in expected)


@pytest.mark.parametrize("task, set_type", sorted(FIRST_ROWS))
def test_each_official_layout_reads_to_its_rows_texts_labels_and_indexes(task, set_type):
    rows, first = FIRST_ROWS[task, set_type]
    examples = read(task, FIXTURES / task, set_type)
    assert len(examples) == rows
    assert (examples[0].text_a, examples[0].text_b, examples[0].label, examples[0].index) == first
    is_test = set_type in get_task(task).test_set_types
    assert all((example.label is None) == is_test for example in examples)
    assert len({example.index for example in examples}) == rows


def test_qqp_rows_with_missing_fields_are_errors_unless_skipping_is_asked_for(tmp_path):
    with pytest.raises(GlueFormatError, match=r"train.tsv, line 6: 4 tab-separated columns, expected 6 for QQP "
                                              r"train \(--dproc.skip_malformed true leaves such rows out\)"):
        read("QQP", FIXTURES / "QQP", "train")
    processor = GlueProcessor("QQP", skip_malformed=True)
    examples = processor.process(str(FIXTURES / "QQP"), "train")
    assert [example.index for example in examples] == [133273, 402555, 360472, 150662, 183004, 119056]
    assert processor.skipped == [6]
    assert [reason.partition("train.tsv, ")[2] for reason in processor.skip_reasons] == [
        "line 6: skipped: 4 tab-separated columns, expected 6 for QQP train"]
    assert processor.summary() == "QQP: 6 examples; labels 0: 4, 1: 2; 1 malformed rows skipped"


def test_skipping_covers_bad_labels_too_and_nothing_is_reported_for_clean_files(tmp_path):
    (tmp_path / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n"
                                      "1\ta\tb\tmaybe\n2\ta\tb\tnot_entailment\n", encoding="utf-8")
    processor = GlueProcessor("RTE", skip_malformed=True)
    assert [e.index for e in processor.process(str(tmp_path), "dev")] == [0, 2]
    assert processor.skipped == [3] and "line 3: skipped: label 'maybe'" in processor.skip_reasons[0]
    processor.process(str(FIXTURES / "RTE"), "dev")
    assert processor.skipped == [] and processor.skip_reasons == []


@pytest.mark.parametrize("task, set_type, name", [
    ("CoLA", "test", "CoLA.tsv"), ("SST-2", "test", "SST-2.tsv"), ("MRPC", "test", "MRPC.tsv"),
    ("STS-B", "test", "STS-B.tsv"), ("QQP", "test", "QQP.tsv"), ("MNLI", "test_matched", "MNLI-m.tsv"),
    ("MNLI", "test_mismatched", "MNLI-mm.tsv"), ("QNLI", "test", "QNLI.tsv"), ("RTE", "test", "RTE.tsv"),
    ("WNLI", "test", "WNLI.tsv"), ("AX", "test", "AX.tsv"), ("AX", "diagnostic", "AX.tsv"),
])
def test_leaderboard_file_names(task, set_type, name):
    assert get_task(task).submission_file(set_type) == name


def test_only_test_sets_have_leaderboard_files_and_ax_is_predicted_by_mnli_models():
    with pytest.raises(ValueError, match="MNLI dev_matched is not a test set"):
        get_task("MNLI").submission_file("dev_matched")
    assert get_task("AX").trained_as is get_task("MNLI") and get_task("RTE").trained_as is get_task("RTE")


@pytest.mark.skipif(not SHARED_GLUE.is_dir(), reason="the official GLUE files are not in ../shared/glue_data")
@pytest.mark.parametrize("task, counts", [("CoLA", (8551, 1043, 1063)), ("SST-2", (67349, 872, 1821)),
                                          ("MRPC", (3668, 408, 1725)), ("STS-B", (5749, 1500, 1379)),
                                          ("RTE", (2490, 277, 3000))])
def test_every_split_of_the_official_files_reads_to_its_row_count(task, counts):
    """Row counts from ../shared/glue_data/README.md (the official sets)."""
    for set_type, count in zip(("train", "dev", "test"), counts):
        assert len(read(task, SHARED_GLUE / task, set_type)) == count


RTE_HEADER = "index\tsentence1\tsentence2\tlabel\n"


@pytest.mark.parametrize("task, set_type, content, message", [
    ("RTE", "train", RTE_HEADER + "0\ta\tb\tentailment\n1\ta\tentailment\n",
     "train.tsv, line 3: 3 tab-separated columns, expected 4 for RTE train"),
    ("RTE", "train", RTE_HEADER + "0\ta\tb\tentailment\textra\n", "line 2: 5 tab-separated columns, expected 4"),
    ("RTE", "train", RTE_HEADER + "0\ta\tb\tEntailment\n", "line 2: label 'Entailment' is not one of entailment, "
                                                            "not_entailment"),
    ("STS-B", "train", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                       "0\tg\tf\t2012\t1\tn\tn\tA b.\tC d.\tfive\n", "line 2: score 'five' is not a number"),
    ("RTE", "train", b"index\tsentence1\tsentence2\tlabel\n0\ta\t\xe9\tentailment\n",
     "line 2: bytes that are not UTF-8"),
    ("RTE", "train", "", "train.tsv: empty file (expected a header line)"),
    ("RTE", "train", RTE_HEADER, "train.tsv: no data rows (expected a RTE train file)"),
    ("RTE", "dev", None, "dev.tsv: no such file (expected the RTE dev.tsv)"),
    ("RTF", "train", RTE_HEADER, "unknown GLUE task 'RTF'; expected one of: CoLA, SST-2"),
    ("RTE", "dev_matched", RTE_HEADER, "task RTE has no set_type 'dev_matched'; expected one of: train, dev, test"),
    ("RTE", "train", RTE_HEADER + "0\ta\tb\tentailment\n   \n1\tc\td\tentailment\n",
     "train.tsv, line 3: blank line, expected 4 tab-separated columns for RTE train (--dproc.skip_malformed true "
     "leaves such rows out)"),
    ("RTE", "train", b"index\tsentence1\tsentence2\tlabel\r\n0\ta\tb\tentailment\r\n\r\n",
     "train.tsv, line 3: blank line, expected 4 tab-separated columns for RTE train"),
    ("RTE", "train", b"index\tsentence1\tsentence2\tlabel\r0\ta\tb\tentailment\r1\tc\td\tentailment\r",
     "train.tsv: its lines end in a carriage return alone (old Mac line endings), so the whole file reads as one "
     "line; convert them to newlines, e.g. with sed -i 's/\\r/\\n/g' "),
])
def test_malformed_input_stops_data_py_naming_file_and_line_and_writes_nothing(argv, tiny_bert, tmp_path, task,
                                                                                set_type, content, message):
    raw = tmp_path / "raw"
    raw.mkdir()
    if content is not None:
        target = raw / f"{set_type}.tsv" if task != "RTF" else raw / "train.tsv"
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
    argv("--dmod.input_dir", raw, "--dmod.output_dir", tmp_path / "out", "--dproc.task", task,
         "--dproc.set_type", set_type, "--dproc.tokenizer", tiny_bert)
    with pytest.raises((ValueError, OSError)) as stop:  # one line on stderr under run_main (test_options.py)
        data.main()
    assert message in str(stop.value)
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_skipping_malformed_rows_reports_each_and_the_total(argv, tiny_bert, tmp_path, caplog):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "train.tsv").write_text(RTE_HEADER + "0\ta\tb\tentailment\n1\tbroken\n2\tc\td\tnope\n\n"
                                   "3\te\tf\tentailment\n", encoding="utf-8")
    argv("--dmod.input_dir", raw, "--dmod.output_dir", tmp_path / "out", "--dproc.tokenizer", tiny_bert,
         "--dproc.skip_malformed", "true", "--dproc.workers", "1")
    with caplog.at_level("INFO"):
        data.main()
    assert "train.tsv, line 3: skipped: 2 tab-separated columns" in caplog.text
    assert "train.tsv, line 4: skipped: label 'nope'" in caplog.text
    assert "train.tsv, line 5: skipped: blank line" in caplog.text
    assert "RTE: 2 examples; labels entailment: 2, not_entailment: 0; 3 malformed rows skipped" in caplog.text
    dataset = data.TaskDataset(str(tmp_path / "out" / "train.tsv"))
    assert [feature.index for feature in dataset] == [0, 3] and dataset.metadata["skipped_lines"] == [3, 4, 5]


@pytest.mark.parametrize("skip_malformed", ["false", "true"])
def test_a_file_concatenated_with_itself_stops_data_py_naming_both_lines(argv, tiny_bert, rte_subset, tmp_path,
                                                                         skip_malformed):
    """Read as it is, the 24 repeated indexes would be scored once each; with skip_malformed the second header is
    left out as a malformed row, but the repeated indexes are not."""
    dev = rte_subset / "dev.tsv"
    dev.write_bytes(dev.read_bytes() * 2)
    argv("--dmod.input_dir", rte_subset, "--dmod.output_dir", tmp_path / "out", "--dproc.set_type", "dev",
         "--dproc.tokenizer", tiny_bert, "--dproc.skip_malformed", skip_malformed)
    with pytest.raises(ValueError) as stop:
        data.main()
    expected = ("line 26: label 'label' is not one of entailment, not_entailment (--dproc.skip_malformed true "
                "leaves such rows out)" if skip_malformed == "false" else
                "line 27: index 0 repeats line 2's (two files concatenated?); every example needs its own index "
                "(an error even with --dproc.skip_malformed true)")
    assert str(stop.value) == f"{dev}, {expected}"
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []
