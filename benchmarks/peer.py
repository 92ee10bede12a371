"""One measurement of one system, in a process of its own; prints its result as JSON.

    python benchmarks/peer.py KEY SCENARIO SIZE... DIRECTORY [DATABASE_URL]

Run by compare.py; SCENARIO is one of probe (what the system is), steps N, prepare K, recover K, roundtrips COUNT,
publisher COUNT, holding M N, throughput INSTANCES STEPS. The result is
{"value": ...} or {"unsupported": why}.
"""

from __future__ import annotations

import sys
from pathlib import Path

TIMEOUT = 600.0  # seconds one round-trip side waits for the other


def main(argv: list[str]) -> None:
    key, scenario, *rest = argv
    from peers import BY_KEY, load
    from peers.base import Unsupported, publisher, report, round_trips

    system = BY_KEY[key]
    if system.path is not None:
        sys.path.insert(0, str(system.path))
    sizes = [int(arg) for arg in rest if arg.isdigit()]
    directory, *url = [arg for arg in rest if not arg.isdigit()]
    peer = load(system)(Path(directory), url[0] if url else None)
    try:
        if scenario == "probe":
            value = {"label": peer.label, "store": peer.store, "durability": peer.durability}
        elif scenario == "roundtrips":
            value = round_trips(peer, key, *sizes, timeout=TIMEOUT)
        elif scenario == "publisher":
            value = publisher(peer, *sizes, timeout=TIMEOUT)
        else:
            value = getattr(peer, scenario)(*sizes)
    except Unsupported as why:
        report({"unsupported": str(why)})
    else:
        report({"value": value})


if __name__ == "__main__":
    main(sys.argv[1:])
