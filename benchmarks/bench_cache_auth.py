"""What signing the compile cache costs a warm start (W4 warm: the W1 MLP step loaded from the
disk cache): per load of a cache entry, the whole CompileCache.get (read, HMAC check, header)
next to the plain SHA-256 the unsigned format computed and to the bare file read; and, once
per gc.function, reading the key. Then the W4 warm compile itself, medians of fresh processes.
Run: python benchmarks/bench_cache_auth.py [--repeat 300] [--rounds 5]"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_training import W4_PROGRAM, _run_ms  # noqa: E402

from graphc.runtime.cache import MAGIC, CompileCache, entry_mac  # noqa: E402
from graphc.runtime.cache_secret import load_secret  # noqa: E402


def median_us(fn: Callable[[], object], repeat: int) -> float:
    for _ in range(10):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    code = W4_PROGRAM.format(folder=str(HERE))
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as config:
        env = dict(os.environ, GRAPHC_CACHE_DIR=cache, XDG_CONFIG_HOME=config)
        os.environ.update(XDG_CONFIG_HOME=config)  # this process signs with the same key
        _run_ms(code, env)  # cold: fills the cache
        (entry,) = Path(cache).glob("*.gco")
        key = entry.stem
        disk = CompileCache(Path(cache))
        assert disk.get(key) is not None, "the entry does not verify"
        data = entry.read_bytes()
        header_end = data.index(b"\n", len(MAGIC))
        mac_end = data.index(b"\n", header_end + 1)
        header, payload = data[len(MAGIC):header_end], data[mac_end + 1:]
        secret = load_secret().key
        rows = {
            "CompileCache.get (read + HMAC + header)": median_us(lambda: disk.get(key),
                                                                args.repeat),
            "file read alone": median_us(entry.read_bytes, args.repeat),
            "HMAC-SHA-256 alone (signed format)": median_us(
                lambda: entry_mac(secret, header, payload), args.repeat),
            "plain SHA-256 alone (unsigned format)": median_us(
                lambda: hashlib.sha256(header + b"\n" + payload).hexdigest(), args.repeat),
            "load_secret (once per gc.function)": median_us(load_secret, args.repeat),
        }
        warm = [_run_ms(code, env) for _ in range(args.rounds)]
    print(f"W4 entry: {len(data)} bytes ({len(payload)} of code and data)")
    for name, us in rows.items():
        print(f"  {name:<42} {us:8.1f} us")
    extra = rows["HMAC-SHA-256 alone (signed format)"] - \
        rows["plain SHA-256 alone (unsigned format)"]
    print(f"  {'signing over the unsigned check':<42} {extra:8.1f} us")
    print(f"W4 warm, {args.rounds} fresh processes (medians): total "
          f"{statistics.median(w[0] for w in warm):.1f} ms, compile "
          f"{statistics.median(w[1] for w in warm):.1f} ms")


if __name__ == "__main__":
    main()
