"""Where a new process's first call of a variant spends its time: runs `bench.COMPILE_PROBE` (import,
compile, first forward, first backward) in fresh processes, with cProfile on from the compile call
to the first forward's end, cold (empty attnforge and
Triton caches) then warm (both caches filled by the cold run), and prints each run's probe timings
and its heaviest functions (main thread only; the warm-up and backward-compile threads are not
profiled, their cost shows as waits; ATTNFORGE_WARMUP=0 runs the warm-up's work on the main thread).

    python benchmarks/profile_start.py [--variant causal] [--top 40] [--runs cold warm warm]
"""
import argparse
import json
import os
import pstats
import subprocess
import sys
import tempfile

from attnforge.bench import COMPILE_PROBE, COMPILE_VARIANTS, _bytecode_env


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="causal", choices=sorted(COMPILE_VARIANTS))
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--runs", nargs="+", default=["cold", "warm", "warm"])
    ap.add_argument("--L", type=int, default=2048)
    ap.add_argument("--callees", nargs="*", default=[], help="also print the callees of these functions (regexes)")
    ap.add_argument("--no-bytecode", action="store_true", help="this environment as it is (see bench._bytecode_env)")
    a = ap.parse_args()
    src = COMPILE_VARIANTS[a.variant]
    nxt = src.replace("q_idx >= kv_idx", "q_idx + 1 >= kv_idx")
    # the profiler runs from the compile call to the first forward's end (the probe's timed window)
    probe_src = COMPILE_PROBE.replace("t0 = time.perf_counter()\n", "import cProfile, os\n_pr = cProfile.Profile()\n"
                                      "_pr.enable()\nt0 = time.perf_counter()\n")
    probe_src = probe_src.replace("t_fwd = time.perf_counter() - t0\n", "t_fwd = time.perf_counter() - t0\n"
                                  "_pr.disable()\n_pr.dump_stats(os.environ['PROBE_PROFILE'])\n")
    assert "_pr.dump_stats" in probe_src and "_pr.enable" in probe_src
    with tempfile.TemporaryDirectory() as tmp:
        probe = os.path.join(tmp, "probe.py")
        with open(probe, "w") as f:
            f.write(probe_src)
        env = {**(os.environ if a.no_bytecode else _bytecode_env()), "ATTNFORGE_CACHE_DIR": os.path.join(tmp, "af"),
               "TRITON_CACHE_DIR": os.path.join(tmp, "tr"), "ATTNFORGE_AUTOTUNE": "0"}
        for i, run in enumerate(a.runs):
            prof = os.path.join(tmp, f"run{i}.prof")
            out = subprocess.run([sys.executable, probe, src, str(a.L), nxt, "0"],
                                 env={**env, "PROBE_PROFILE": prof}, capture_output=True, text=True, timeout=600)
            print(f"=== run {i} ({run}): rc {out.returncode}")
            if out.returncode:
                print(out.stderr[-2000:])
                continue
            print(json.dumps(json.loads(out.stdout.splitlines()[-1])))
            st = pstats.Stats(prof)
            st.sort_stats("cumulative").print_stats(a.top)
            st.sort_stats("tottime").print_stats(a.top // 2)
            for pattern in a.callees:
                st.sort_stats("cumulative").print_callees(pattern)


if __name__ == "__main__":
    main()
