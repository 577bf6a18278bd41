"""External files over HTTP: ``close`` (reads every object once for its
digests) and ``get --copy`` against reading the same objects one after the
other with urllib, interleaved in one run (the machine's load swings).

    python tests/benchmarks/bench_external.py [--files 400] [--size 20000]
        [--latency-ms 5] [--rounds 3]

A local HTTP server (a thread of this process, 127.0.0.1) serves the files
with ``--latency-ms`` of delay per request, standing in for a remote site.
Per round: the baseline (one process GETs every object in turn, as a close
that read them one at a time would at best), then a fresh draft that adds
every URL and closes it, with a fresh cache (nothing remembered), then
``get --copy`` of that version (every chunk fetched by range), then the
baseline again.  Ratios are baseline seconds / dsfs seconds against the mean
of the two baselines around it (above 1: faster than the serial reader);
medians over the rounds, and the load average before and after.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import random
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_mount import DSFS  # noqa: E402
from bench_scale import run, scratch  # noqa: E402

SERIAL = """
import sys, urllib.request
for url in open(sys.argv[1]).read().split():
    with urllib.request.urlopen(url) as r:
        r.read()
"""


def serve(root: Path, latency: float) -> tuple[str, Any]:
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, directory=str(root), **k)

        def send_head(self) -> Any:
            time.sleep(latency)
            path = self.translate_path(self.path)
            if self.headers.get("Range") and os.path.isfile(path):
                return self._ranged(path)
            return super().send_head()

        def _ranged(self, path: str) -> Any:
            size = os.path.getsize(path)
            first, last = (int(x) for x in self.headers["Range"].split("=")[1].split("-"))
            last = min(last, size - 1)
            f = open(path, "rb")  # noqa: SIM115 - closed by copyfile's caller
            f.seek(first)
            self.send_response(206)
            self.send_header("Content-Length", str(last - first + 1))
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            self.send_header("ETag", f'"{size:x}-{os.stat(path).st_mtime_ns:x}"')
            self.end_headers()
            return _Limited(f, last - first + 1)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


class _Limited:
    """A file object that ends after ``left`` bytes (the ranged body)."""

    def __init__(self, f: Any, left: int) -> None:
        self.f, self.left = f, left

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.f.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--size", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict = {"files": args.files, "size": args.size, "latency_ms": args.latency_ms,
                     "loadavg_before": os.getloadavg()}
    rng = random.Random(1)
    with scratch(False) as base:
        www = base / "www"
        for i in range(args.files):
            d = www / f"d{i % 10}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"f{i}.bin").write_bytes(rng.randbytes(args.size))
        url, server = serve(www, args.latency_ms / 1000)
        urls = [f"{url}/d{i % 10}/f{i}.bin" for i in range(args.files)]
        (base / "urls.txt").write_text("\n".join(urls))
        serial = [sys.executable, "-c", SERIAL, str(base / "urls.txt")]
        ratios: dict[str, list[float]] = {"close": [], "get_copy": []}
        try:
            for r in range(args.rounds):
                run(serial, {}, results, f"r{r}_serial_before")
                env = {"DSFS_STORE": str(base / "store"), "DSFS_DATA_DIR": str(base / "data"),
                       "DSFS_CACHE_DIR": str(base / f"cache-{r}")}
                run([DSFS, "create", "-p", "bench", "-n", "ext"], env, results, f"r{r}_create")
                run([DSFS, "add", *urls], env, results, f"r{r}_add")
                run([DSFS, "close", "-q"], env, results, f"r{r}_close")
                copy = base / "copy"
                run([DSFS, "get", "bench/ext", "--copy", str(copy)], env, results,
                    f"r{r}_get_copy")
                shutil.rmtree(copy)
                run(serial, {}, results, f"r{r}_serial_after")
                mean = (results[f"r{r}_serial_before_s"] + results[f"r{r}_serial_after_s"]) / 2
                for name in ratios:
                    ratios[name].append(round(mean / results[f"r{r}_{name}_s"], 2))
        finally:
            server.shutdown()
    results["ratios"] = ratios
    results["median_ratio"] = {k: statistics.median(v) for k, v in ratios.items()}
    results["loadavg_after"] = os.getloadavg()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
