"""Print the time the clock server pushes, with the blocking client.

python examples/clock_client.py [ws://127.0.0.1:9002/clock] [--count N]
"""

from __future__ import annotations

import argparse

from fullduplex.sync import websocket_connect


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url", nargs="?", default="ws://127.0.0.1:9002/clock")
    parser.add_argument("--count", type=int, default=None, help="stop after N ticks")
    args = parser.parse_args()
    with websocket_connect(args.url) as conn:
        received = 0
        for message in conn:
            print(message, flush=True)
            received += 1
            if args.count is not None and received >= args.count:
                break


if __name__ == "__main__":
    main()
