"""privacy.game and benchmarks/game.py: the oracle and the co-trained agents at small scale (issue 17)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from privacy.game import GameConfig, game_report, run_agents, run_game_oracle

ROOT = Path(__file__).resolve().parents[1]
TINY = GameConfig(data="synthetic", seeds=(0,), epochs=1, image_size=None, recipe="tiny", batch_size=16, phases=1,
                  kinds=2, agents=("reinforce", "sac"), rewards=("attack_aware", "constrained"),
                  attacker={"components": 16, "simulated": 64, "refit_every": 10})


@pytest.mark.slow
def test_the_game_runs_resumes_and_reports(tmp_path):
    result = run_game_oracle(TINY, tmp_path, log=None)
    assert result.runs > 0 and set(result.searched) == {"reward:attack_aware", "matched_privacy"}
    for runs in result.fixed.values():  # every run scored under every game reward at once
        assert set(runs[0].returns) == {"fr_loss_learnable", "attack_aware", "constrained"}
        assert 0 <= runs[0].accuracy <= 1 and 0 <= runs[0].privacy <= 1
    assert result.fixed[2][0].privacy < result.fixed[6][0].privacy  # more mixing, less leakage
    agents = run_agents(TINY, tmp_path, log=None)
    assert [(a.agent, a.reward) for a in agents] == [("reinforce", "attack_aware"), ("reinforce", "constrained"),
                                                      ("sac", "attack_aware"), ("sac", "constrained")]
    for a in agents:
        assert set(a.returns) == {"fr_loss_learnable", "attack_aware", "constrained"}
        assert sum(a.k_distribution.values()) == pytest.approx(1.0)
    records = list((tmp_path / "agents").glob("*.json"))
    assert len(records) == 4 and json.loads(records[0].read_text())["settings"]["data"] == "synthetic"
    again = run_game_oracle(TINY, tmp_path, log=None, compute=False)
    assert again.runs == 0 and again.scores == result.scores
    assert run_agents(TINY, tmp_path, log=None, compute=False) == agents
    text = game_report(TINY, again, agents, "python3 benchmarks/game.py")
    assert text.startswith("## The game: oracle and co-trained agents (issue 17)")
    assert "| fixed k=2 | ((2,),) |" in text and "| searched (matched_privacy) |" in text
    assert "| sac | constrained |" in text and "Room for adaptivity" in text
    empty = tmp_path / "empty"
    assert run_game_oracle(TINY, empty, log=None, compute=False) is None  # nothing computed from a report


def test_the_script_writes_its_section_from_the_records(tmp_path):
    md = tmp_path / "benchmarks.md"
    md.write_text("# Measured figures\n\n## Another section\n\nkept\n")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "game.py"), "--data", "synthetic", "--seeds", "0",
           "--store", str(tmp_path / "store"), "--md", str(md), "--report-only", "--no-oracle"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    text = md.read_text()
    assert "## The game: oracle and co-trained agents (issue 17)" in text and "## Another section\n\nkept" in text
