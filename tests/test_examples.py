"""The privacy scripts of examples/: their command lines (privacy.cli, in process), and each script run as a user
runs it (a subprocess: nothing imports a script). Their logic is tested in test_defences, test_privacy_evaluate and
test_grid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from privacy import cli

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def script(name: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "examples" / f"{name}.py"), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=ENV)


@pytest.mark.parametrize("command,args,msg", [
    (cli.train_fr, ["--defence", "policy"], "needs --policy"),
    (cli.train_fr, ["--defence", "none", "--backbone", "grid"], "pixel backbone goes with --defence none"),
    (cli.train_fr, ["--defence", "nls", "--smoothing", "0.1"], "smoothing must lie in (-1, 0)"),
    (cli.evaluate, ["--model", "m.pt", "--steps", "0"], "--steps must be >= 1, got 0"),
    (cli.evaluate, ["--model", "m.pt", "--judge-min-updates", "0"], "--judge-min-updates must be >= 1"),
    (cli.reproduce, ["--datasets", "celeba"], "unknown data set(s) ['celeba']"),
    (cli.pareto, ["a.json", "b.json", "--labels", "x"], "--labels gives 1 labels for 2 reports"),
], ids=lambda v: getattr(v, "__name__", None))
def test_command_lines_refuse_bad_arguments_with_the_library_s_message(command, args, msg, capsys):
    with pytest.raises(SystemExit) as e:
        command(args)
    assert e.value.code == 2 and msg in capsys.readouterr().err


def test_a_command_line_s_help_is_its_script_s_first_paragraph(capsys):
    with pytest.raises(SystemExit):
        cli.train_fr(["--help"], doc="Train it.\n\nMore.")
    out = capsys.readouterr().out
    assert "Train it." in out and "More." not in out and "--defence" in out


@pytest.mark.slow
def test_train_attack_and_plot_from_the_command_line(tmp_path):
    """train_fr.py --public-fraction -> evaluate_privacy.py -> pareto_report.py, on tiny settings."""
    res = script("train_fr", "--defence", "fixed", "--k", "2", "--public-fraction", "0.3", "--epochs", "1",
                 "--batch-size", "32", "--no-progress", "--out", str(tmp_path / "m"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "top-1" in res.stdout and "majority class" in res.stdout
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["settings"]["defence"] == {"name": "fixed", "k": 2} and metrics["public_identities"] == 6
    res = script("evaluate_privacy", "--model", str(tmp_path / "m" / "fr_model.pt"), "--data", "synthetic",
                 "--attacks", "blackbox_scores", "datalevel", "--min-updates", "1", "--evaluator-epochs", "1",
                 "--decoder-epochs", "1", "--unmix-epochs", "1", "--grid-identities", "2", "--no-progress",
                 "--out", str(tmp_path / "p"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "privacy score" in res.stdout and "datalevel" in res.stdout
    report = json.loads((tmp_path / "p" / "privacy.json").read_text())
    assert report["attacks"]["datalevel"]["k_values"] == [2] and report["settings"]["budget"]["min_updates"] == 1
    # by default both judges: the pretrained one heads each attack's entry, the evaluator beside it
    assert list(report["judges"]) == ["pretrained", "evaluator"] == list(report["attacks"]["datalevel"]["judges"])
    assert report["attacks"]["datalevel"]["judge"]["name"] == "dlib_resnet_v1"
    assert (tmp_path / "p" / "judge_gallery.pt").is_file()
    res = script("pareto_report", str(tmp_path / "p" / "privacy.json"), "--out", str(tmp_path / "pareto.png"))
    assert res.returncode == 0 and "fixed k=2 (masked_dct)" in res.stdout and (tmp_path / "pareto.png").is_file()
    # an evaluation that measured nothing (the data-level attack on a pixel model is skipped) exits 1, and says why
    res = script("train_fr", "--defence", "none", "--public-fraction", "0.3", "--epochs", "1", "--batch-size", "32",
                 "--no-progress", "--out", str(tmp_path / "px"))
    assert res.returncode == 0, res.stderr[-2000:]
    res = script("evaluate_privacy", "--model", str(tmp_path / "px" / "fr_model.pt"), "--data", "synthetic",
                 "--attacks", "datalevel", "--min-updates", "1", "--evaluator-epochs", "1", "--no-progress",
                 "--judges", "evaluator",
                 "--out", str(tmp_path / "p2"))
    assert res.returncode == 1 and "no attack measured anything" in res.stderr


@pytest.mark.slow
def test_reproduce_report_only_rewrites_the_committed_page_from_its_cells(tmp_path):
    """The committed docs/RESULTS.md is what --report-only computes from docs/results/ (its tables, not typed)."""
    res = script("reproduce", "--report-only", "--cells", str(ROOT / "docs" / "results"), "--report",
                 str(tmp_path / "RESULTS.md"), timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    ours = (tmp_path / "RESULTS.md").read_text().splitlines()
    committed = (ROOT / "docs" / "RESULTS.md").read_text().splitlines()
    tables = lambda lines: [ln for ln in lines if ln.startswith("|") or ln.startswith("- **")]  # noqa: E731
    assert tables(ours) == tables(committed) and len(tables(ours)) > 20
