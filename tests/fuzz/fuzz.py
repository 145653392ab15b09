"""Run one fuzz target under atheris (libFuzzer, coverage-guided), or write the seeds.

    python tests/fuzz/fuzz.py frames -max_total_time=3600     # a long run
    python tests/fuzz/fuzz.py --list
    python tests/fuzz/fuzz.py --write-seeds                    # regenerate corpus/*/seed-*

Arguments after the target go to libFuzzer. New inputs go to ``.fuzz/<target>/`` (not
in git) unless another first corpus directory is given; ``corpus/<target>/`` in the
repository is always read as seeds. Copy an input worth keeping into the repository
corpus (``-merge=1`` minimises a directory first). A crash leaves ``crash-*`` with the
input; replay it with ``python tests/fuzz/fuzz.py <target> crash-...``.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv[0] == "--write-seeds":
        from fuzz_seeds import write_seeds

        write_seeds(os.path.join(HERE, "corpus"))
        return 0
    import atheris  # type: ignore[import-untyped]

    with atheris.instrument_imports(include=["fullduplex"]):
        import fuzz_targets as targets
    if argv[0] == "--list":
        print("\n".join(targets.TARGETS))
        return 0
    name, args = argv[0], argv[1:]
    if name not in targets.TARGETS:
        print(f"unknown target {name!r}; one of: {', '.join(targets.TARGETS)}", file=sys.stderr)
        return 2
    seeds = os.path.join(HERE, "corpus", name)
    dirs = [a for a in args if not a.startswith("-")]
    if not dirs:
        work = os.path.join(ROOT, ".fuzz", name)
        os.makedirs(work, exist_ok=True)
        args = [work, *args]
    if not any(os.path.isfile(d) for d in dirs):
        args.append(seeds)  # not when replaying single files
    if not any(a.startswith("-rss_limit_mb") for a in args):
        args.append("-rss_limit_mb=1024")
    if not any(a.startswith("-max_len") for a in args):
        args.append("-max_len=16384")
    atheris.Setup([sys.argv[0], *args], targets.TARGETS[name])
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
