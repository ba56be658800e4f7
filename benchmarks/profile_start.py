"""Where a new process's first call of a variant spends its time: runs `bench.COMPILE_PROBE` (import,
compile, first forward, first backward) under cProfile in fresh processes, cold (empty attnforge and
Triton caches) then warm (both caches filled by the cold run), and prints each run's probe timings
and its heaviest functions (main thread only; the warm-up and backward-compile threads are not
profiled, their cost shows as waits).

    python benchmarks/profile_start.py [--variant causal] [--top 40] [--runs cold warm warm]
"""
import argparse
import json
import os
import pstats
import subprocess
import sys
import tempfile

from attnforge.bench import COMPILE_PROBE, COMPILE_VARIANTS


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="causal", choices=sorted(COMPILE_VARIANTS))
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--runs", nargs="+", default=["cold", "warm", "warm"])
    ap.add_argument("--L", type=int, default=2048)
    a = ap.parse_args()
    src = COMPILE_VARIANTS[a.variant]
    nxt = src.replace("q_idx >= kv_idx", "q_idx + 1 >= kv_idx")
    with tempfile.TemporaryDirectory() as tmp:
        probe = os.path.join(tmp, "probe.py")
        with open(probe, "w") as f:
            f.write(COMPILE_PROBE)
        env = {**os.environ, "ATTNFORGE_CACHE_DIR": os.path.join(tmp, "af"),
               "TRITON_CACHE_DIR": os.path.join(tmp, "tr"), "ATTNFORGE_AUTOTUNE": "0"}
        for i, run in enumerate(a.runs):
            prof = os.path.join(tmp, f"run{i}.prof")
            out = subprocess.run([sys.executable, "-m", "cProfile", "-o", prof, probe, src, str(a.L), nxt, "0"],
                                 env=env, capture_output=True, text=True, timeout=600)
            print(f"=== run {i} ({run}): rc {out.returncode}")
            if out.returncode:
                print(out.stderr[-2000:])
                continue
            print(json.dumps(json.loads(out.stdout.splitlines()[-1])))
            st = pstats.Stats(prof)
            st.sort_stats("cumulative").print_stats(a.top)
            st.sort_stats("tottime").print_stats(a.top // 2)


if __name__ == "__main__":
    main()
