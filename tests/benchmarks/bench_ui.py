"""How long each page of ``dsfs ui`` takes on a version of a million files.

    python tests/benchmarks/bench_ui.py [--files 1000000] [--flat 100000] [--reps 5]

Builds, in a scratch store: a few seed files really stored (text, CSV, JSON,
PNG, binary), a synthetic version of --files entries reusing their contents
(written as a manifest directly, as ``bench_scale.py`` does: 1,000 files a
folder, 100 folders under each of ``m000``...), a child that changes 10 of
them, a version with one flat folder of --flat files, and the same three at
1/1000 of the size as the baseline.  Then it indexes the versions (the tree
index a mount uses; the UI's statistics are computed once, as the UI does on
a first visit) and times every page, each rep interleaving baseline and big
versions, through the WSGI application in this process.  The figures are
medians; each page must render in under a second at --files 1,000,000.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

EXTS = (".txt", ".csv", ".json", ".png", ".bin", ".py", ".md", "")


def make_seeds(folder: Path) -> None:
    from ui_demo import png

    folder.mkdir()
    for i, ext in enumerate(EXTS * 2):
        if ext == ".png":
            data = png(16 + i, 16, i)
        elif ext == ".json":
            data = json.dumps({"i": i, "values": list(range(i))}).encode()
        elif ext == ".csv":
            data = ("a,b\n" + "".join(f"{j},{j * i}\n" for j in range(20))).encode()
        else:
            data = os.urandom(200 + 97 * i) if ext in (".bin", "") else (f"line {i}\n" * i).encode()
        (folder / f"s{i:02d}{ext}").write_bytes(data)


class Synthetic:
    """Entries made on the fly (re-iterable: ``publish`` reads them twice)."""

    def __init__(self, seeds: list, count: int, flat: bool) -> None:
        self.seeds, self.count, self.flat = seeds, count, flat

    def __iter__(self) -> Iterator:
        seeds, n = self.seeds, len(self.seeds)
        for i in range(self.count):
            seed = seeds[i % n]
            ext = EXTS[i % n % len(EXTS)]
            path = (f"flat/f{i:08d}{ext}" if self.flat else
                    f"m{i // 100_000:03d}/d{(i // 1000) % 100:02d}/f{i:08d}{ext}")
            yield replace(seed, path=path)


def publish(repo, name: str, entries, parents: list[str] | None = None, depth: int = 1,
            stats: dict | None = None):  # noqa: ANN001, ANN201
    from dsfs.engine.publish import publish as publish_version
    from dsfs.engine.versions import new_header

    header = new_header(repo, "bench", name, parents=parents or [])
    header.chain_depth = depth
    header.stats = stats or {}
    return publish_version(repo, header, entries, False)


def build(repo, seeds: list, files: int, flat: int, label: str) -> dict:  # noqa: ANN001
    n = len(seeds)
    size = sum(seeds[i % n].size for i in range(files))
    base = publish(repo, f"tree-{label}", Synthetic(seeds, files, False),
                   stats={"files": files, "size": size, "added": files})
    changed = [replace(seeds[(i + 1) % n], path=f"m000/d00/f{i:08d}{EXTS[i % n % len(EXTS)]}")
               for i in range(10)]
    child = publish(repo, f"tree-{label}", changed, parents=[base.id], depth=2,
                    stats={"files": files, "size": size, "modified": 10})
    flat_size = sum(seeds[i % n].size for i in range(flat))
    flat_v = publish(repo, f"flat-{label}", Synthetic(seeds, flat, True),
                     stats={"files": flat, "size": flat_size, "added": flat})
    return {"base": base, "child": child, "flat": flat_v, "files": files, "flat_n": flat}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--flat", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--keep", help="use (and keep) this scratch folder")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench-ui-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.update(DSFS_DATA_DIR=str(work / "data"), DSFS_CACHE_DIR=str(work / "cache"),
                      DSFS_STORE=str(work / "store"))
    import subprocess

    from dsfs.catalog import Catalog, Ref
    from dsfs.engine import treewalk
    from dsfs.repository import Repository
    from dsfs.ui import model
    from dsfs.ui.app import App
    from dsfs.ui.stats import compute

    results: dict = {"files": args.files, "flat": args.flat,
                     "load_before": os.getloadavg()}
    make_seeds(work / "seeds")
    subprocess.run([str(Path(sys.executable).with_name("dsfs")), "-q", "sync",
                    str(work / "seeds"), "-p", "bench", "-n", "seeds"], check=True)
    repo = Repository.open()
    seed_header = Catalog(repo).resolve(Ref(project="bench", name="seeds"))
    seeds = sorted(treewalk.iter_files(treewalk.open_tree(repo, seed_header)),
                   key=lambda e: e.path)
    start = time.perf_counter()
    small = build(repo, seeds, max(args.files // 1000, 100), max(args.flat // 1000, 100), "small")
    big = build(repo, seeds, args.files, args.flat, "big")
    results["publish_s"] = round(time.perf_counter() - start, 1)
    for label, versions in (("small", small), ("big", big)):
        for key in ("base", "child", "flat"):
            header = versions[key]
            start = time.perf_counter()
            treewalk.open_tree(repo, header)  # index the manifest (what a mount does)
            results[f"{label}_{key}_index_s"] = round(time.perf_counter() - start, 2)
            start = time.perf_counter()
            compute(repo, header)
            results[f"{label}_{key}_stats_s"] = round(time.perf_counter() - start, 2)

    app = App(repo)

    def get(path: str, query: str = "") -> float:
        status: list[str] = []
        start = time.perf_counter()
        body = b"".join(app({"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query},
                            lambda s, h: status.append(s)))
        took = time.perf_counter() - start
        assert status[0].startswith("200"), (path, query, status, body[:500])
        return took

    def pages(v: dict) -> dict[str, tuple[str, str]]:
        base, child, flat = v["base"].id, v["child"].id, v["flat"].id
        def path_of(i: int) -> str:
            return f"m{i // 100_000:03d}/d{(i // 1000) % 100:02d}/f{i:08d}"

        mid, last = path_of(v["files"] // 2), path_of(v["files"] - 50)
        flat_mid = f"f{v['flat_n'] // 2:08d}"
        return {
            "index": ("/", ""),
            "search": ("/", "q=tree"),
            "lineage": ("/ds/" + model.dataset_key("bench", v["base"].name), ""),
            "version": (f"/v/{base}", ""),
            "child_version": (f"/v/{child}", ""),
            "folder_1000": (f"/v/{base}", "dir=m000/d00"),
            "changes_middle": (f"/v/{base}", f"c={mid}"),
            "changes_last": (f"/v/{base}", f"c={last}"),
            "flat_folder_first": (f"/v/{flat}", "dir=flat"),
            "flat_folder_middle": (f"/v/{flat}", f"dir=flat&d={flat_mid}"),
            "diff_middle": ("/diff", f"a={flat}&b={base}&after={mid}"),
            "flat_version": (f"/v/{flat}", ""),
            "file": (f"/v/{base}/file", "path=m000/d00/f00000001.csv"),
            "diff_base_child": ("/diff", f"a={base}&b={child}"),
        }

    small_pages, big_pages = pages(small), pages(big)
    times: dict[str, dict[str, list[float]]] = {"small": {}, "big": {}}
    for name in small_pages:  # first visits (they resolve and memoize directories)
        results[f"first_visit_{name}_baseline_s"] = round(get(*small_pages[name]), 4)
        results[f"first_visit_{name}_s"] = round(get(*big_pages[name]), 4)
    # a version page whose statistics are not known yet: it starts their
    # computation in the background and answers at once
    from dsfs.ui.stats import stats_path

    stats_path(repo, big["base"].id).unlink()
    results["page_version_stats_unknown_s"] = round(get(*big_pages["version"]), 4)
    start = time.perf_counter()
    app.jobs.wait()
    results["background_stats_s"] = round(time.perf_counter() - start, 2)
    for _ in range(args.reps):
        for name in small_pages:
            times["small"].setdefault(name, []).append(get(*small_pages[name]))
            times["big"].setdefault(name, []).append(get(*big_pages[name]))
    worst = 0.0
    for name in small_pages:
        s, b = statistics.median(times["small"][name]), statistics.median(times["big"][name])
        worst = max(worst, b)
        results[f"page_{name}_s"] = round(b, 4)
        results[f"page_{name}_baseline_s"] = round(s, 4)
        results[f"ratio_{name}_big_over_baseline"] = round(b / s, 2) if s else None
    results["worst_page_s"] = round(worst, 4)
    results["load_after"] = os.getloadavg()
    print(json.dumps(results, indent=1))
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    if args.files >= 1_000_000 and worst >= 1.0:
        sys.exit("a page took a second or more")


if __name__ == "__main__":
    main()
