"""Kill soak (issue 4): SIGKILL a real `evsed run` at seeded random points of sessions, restart
it at once, and check what the CSMS received against what the simulated hardware did.

    .venv/bin/python bench/kill_soak.py --rounds 500 --seed 1
    .venv/bin/python bench/kill_soak.py --rounds 500 --ocpp 2.0.1

With --ocpp 2.0.1 the station speaks OCPP 2.0.1 and the checker is the TransactionEvent one
of tests/ocpp201/test_kill_soak_201.py (0 lost, 0 duplicated beyond the one in flight at a
crash, seqNo gap-free per transaction).

Prints the number of checker violations and the throughput (kills per minute); exits 1 if
there was any violation. The driver is the one tests/e2e/test_kill_soak.py runs with 60 rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.test_kill_soak import run_kill_soak  # noqa: E402
from tests.ocpp201.test_kill_soak_201 import run_kill_soak_201  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=500, help="kill rounds (default 500)")
    parser.add_argument("--seed", type=int, default=20240607, help="schedule seed")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR (logs, db) and keep it")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument(
        "--ocpp", default="1.6", choices=["1.6", "2.0.1"], help="OCPP version (default 1.6)"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")

    def progress(line: str) -> None:
        if not args.quiet:
            print(line, flush=True)

    async def run(workdir: Path) -> int:
        soak = run_kill_soak_201 if args.ocpp == "2.0.1" else run_kill_soak
        result = await soak(workdir, rounds=args.rounds, seed=args.seed, progress=progress)
        print(
            f"OCPP {args.ocpp}, seed {args.seed}: {result.kills} kills in {result.seconds:.1f} s",
            flush=True,
        )
        print(f"throughput: {result.kills_per_minute:.1f} kills/min")
        print(f"transactions: {result.transactions}; stop reasons: {dict(result.stop_reasons)}")
        print(f"actions: {dict(result.actions)}")
        for note in result.notes:
            print(f"note: {note}")
        print(f"violations: {len(result.violations)}")
        for line in result.violations:
            print(f"  {line}")
        return 1 if result.violations else 0

    if args.keep:
        workdir = Path(args.keep)
        workdir.mkdir(parents=True, exist_ok=True)
        return asyncio.run(run(workdir))
    with tempfile.TemporaryDirectory(prefix="evsed-kill-soak-") as tmp:
        return asyncio.run(run(Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
