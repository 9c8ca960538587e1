"""Pathfinder generation speed: images per second at 32x32 (one process).

    python benchmarks/pathfinder_generation.py   # part of `make bench`

Target: 20,000 images in at most 30 s on the project's 2-core CPU machine, the size of
the chapter's full-mode data. Prints the measured rate and exits non-zero when the
target is missed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.pathfinder import make_pathfinder  # noqa: E402

TARGET_SECONDS_PER_20K = 30.0


def main() -> int:
    make_pathfinder(200, seed=0)  # warm-up
    start = time.perf_counter()
    data = make_pathfinder(4000, seed=11)
    seconds = time.perf_counter() - start
    per_20k = seconds * 20_000 / len(data)
    ok = per_20k <= TARGET_SECONDS_PER_20K
    print(f"pathfinder generation: {len(data) / seconds:,.0f} images/s at 32x32, "
          f"{per_20k:.1f} s per 20,000 images (target <= {TARGET_SECONDS_PER_20K:.0f} s)"
          f": {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
