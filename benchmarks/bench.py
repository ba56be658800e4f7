"""python benchmarks/bench.py [--quick] ...: the same as `attnforge bench` (attnforge/bench.py)."""
import sys

from attnforge.bench import main

if __name__ == "__main__":
    sys.exit(main())
