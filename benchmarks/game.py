"""The game at small scale (issue 17): the oracle analysis and the co-trained agents, a section of docs/benchmarks.md.

    MIXUP_ENV_DATA=../shared/data python3 benchmarks/game.py                 # oracle, then agents (resumable)
    MIXUP_ENV_DATA=../shared/data python3 benchmarks/game.py --slice         # one FR run: its cost, nothing kept
    python3 benchmarks/game.py --report-only                                 # the section from the records

What is run is :mod:`privacy.game`'s docstring; records (one JSON file per FR run) under ``--store`` (default
``docs/results/game``, committed), so a rerun continues where the last stopped.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from privacy.game import GAME_AGENTS, GAME_REWARDS, GameConfig, chance, game_report, run_agents, run_game_oracle  # noqa: E402
from privacy.oracle import run_table  # noqa: E402
from privacy.report import write_section  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="att_faces")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--agents", nargs="+", default=list(GAME_AGENTS), choices=GAME_AGENTS)
    p.add_argument("--rewards", nargs="+", default=list(GAME_REWARDS), choices=GAME_REWARDS)
    p.add_argument("--store", type=Path, default=ROOT / "docs" / "results" / "game")
    p.add_argument("--md", type=Path, default=ROOT / "docs" / "benchmarks.md")
    p.add_argument("--no-oracle", action="store_true")
    p.add_argument("--no-agents", action="store_true")
    p.add_argument("--report-only", action="store_true", help="write the section from the records, run nothing")
    p.add_argument("--slice", action="store_true", help="time one FR run (fixed k = 4), keep nothing")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = GameConfig(data=args.data, seeds=tuple(args.seeds), epochs=args.epochs, agents=tuple(args.agents),
                        rewards=tuple(args.rewards))
    if args.slice:
        faces = config.faces()
        start = time.perf_counter()
        o = run_table(lambda: config.make_env(faces, "attack_aware"), [(4,)], config.seeds[0])
        print(f"one FR run ({config.epochs} epochs, fixed k = 4): {time.perf_counter() - start:.0f} s; accuracy "
              f"{o.accuracy:.3f}, privacy {o.privacy:.3f}")
        return
    compute = not args.report_only
    result = None if args.no_oracle else run_game_oracle(config, args.store, log=print, compute=compute)
    agents = [] if args.no_agents else run_agents(config, args.store, log=print, compute=compute)
    command = "MIXUP_ENV_DATA=../shared/data python3 benchmarks/game.py" + (
        "" if args.seeds == [0, 1, 2] else f" --seeds {' '.join(map(str, args.seeds))}")
    write_section(args.md, game_report(config, result, agents, command, chance(config)))
    print(f"wrote {args.md}")


if __name__ == "__main__":
    main()
