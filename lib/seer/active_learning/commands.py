"""The simulate-al command: the active-learning loop replayed on a labelled folder, per strategy.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def cmd_simulate_al(args) -> int:
    import tempfile

    from seer.active_learning import simulate as simulate_al
    from seer.settings import SeerSettings, split_requests

    cases = simulate_al.read_cases(args.studies)
    campaign = split_requests(args.campaign)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    conf = {"reasoner": args.reasoner or "offline", "al_backbone": str(not args.no_backbone).lower(),
            "atlases": os.pathsep.join(args.atlases or [])}
    SeerSettings.from_conf(conf)
    held_out = [n.strip() for n in args.held_out.split(",") if n.strip()] if args.held_out else None
    with tempfile.TemporaryDirectory(prefix="seer-simulate-") as work:
        result = simulate_al.simulate(
            cases, campaign, args.steps, strategies, Path(work), conf=conf, held_out=held_out, seed=args.seed,
            progress=None if args.no_progress else (lambda message: print(message, file=sys.stderr, flush=True)),
            reads=args.reads, careless=args.careless,
        )
    paths = simulate_al.write_outputs(result, args.output)
    print(simulate_al.table(result))
    print(f"\npool {len(result['pool'])} cases, held out: {', '.join(result['held_out'])}; written {paths['json']}, "
          f"{paths['plot']}")
    return 0
