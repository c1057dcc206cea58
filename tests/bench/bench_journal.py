"""The change journal: a 100k-file tree with 10 files changed, backed up three ways.

``python tests/bench/bench_journal.py [--files 100000] [--changed 10] [--runs 3]``

Side by side in one run on one tree, after a first backup by each:
- CoreState through its daemon, whose change journal (fanotify, else inotify) names the
  changed paths: only the folders on their way are listed;
- CoreState without a daemon: a full walk (every folder listed; unchanged folders are
  recognised by their entries' lstat fingerprint);
- restic (a full walk with its parent snapshot).
Each round changes ``--changed`` files spread over the tree, pre-reads the tree's metadata
(the page cache is evicted after about a minute idle), then times each tool; the order of
the tools rotates across rounds; medians are reported, with the paths each CoreState
backup visited. Not a test: nothing here runs under pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

PASSPHRASE = "corestate-bench"


def cs(home: Path, *args: str) -> dict:
    p = subprocess.run([sys.executable, "-P", "-m", "corestate.node.cli", "--home", str(home), *args,
                        "--json"], capture_output=True, text=True, check=True,
                       env={**os.environ, "CORESTATE_PASSPHRASE": PASSPHRASE})
    return json.loads(p.stdout.strip().splitlines()[-1])


def make_tree(root: Path, files: int) -> list[Path]:
    """``files`` small files, 100 per folder, folders 3 levels deep (like a source tree)."""
    out = []
    per = 100
    for i in range(files // per):
        d = root / f"a{i % 10}" / f"b{i // 10 % 10}" / f"c{i // 100}"
        d.mkdir(parents=True, exist_ok=True)
        for j in range(per):
            p = d / f"f{j}.txt"
            p.write_text(f"file {i}/{j}\n" * (1 + j % 7))
            out.append(p)
    return out


def walk_metadata(root: Path) -> None:
    for _dirpath, _dirs, names in os.walk(root):
        for n in names:
            os.lstat(os.path.join(_dirpath, n))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--changed", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path(__file__).parent / ".work" / "journal")
    args = ap.parse_args()
    if shutil.which("restic") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "restic"], check=True)
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    tree = work / "tree"
    print(f"making {args.files} files ...", file=sys.stderr)
    files = make_tree(tree, args.files)
    env = {**os.environ, "RESTIC_PASSWORD": PASSPHRASE, "RESTIC_REPOSITORY": str(work / "restic"),
           "RESTIC_CACHE_DIR": str(work / "restic-cache")}
    subprocess.run(["restic", "init"], env=env, check=True, capture_output=True)
    homes = {"journal": work / "home-journal", "walk": work / "home-walk"}
    os.environ["CORESTATE_PASSPHRASE"] = PASSPHRASE
    for h in homes.values():
        subprocess.run([sys.executable, "-P", "-m", "corestate.node.cli", "--home", str(h), "init", "--json"],
                       check=True, capture_output=True)
        cfg = h / "config.toml"
        cfg.write_text(cfg.read_text().replace("paths = []", f'paths = ["{tree}"]', 1)
                       .replace("mdns = true", "mdns = false"))
    daemon = subprocess.Popen([sys.executable, "-P", "-m", "corestate.node.cli", "--home", str(homes["journal"]),
                               "node", "run", "--listen", "/ip4/127.0.0.1/tcp/0", "-q"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert daemon.stdout is not None
        while not daemon.stdout.readline().startswith(b"ready"):
            if daemon.poll() is not None:
                raise SystemExit("the daemon did not start")
        print("first backups ...", file=sys.stderr)
        first = {k: cs(h, "backup") for k, h in homes.items()}
        subprocess.run(["restic", "backup", "-q", str(tree)], env=env, check=True, capture_output=True)
        time.sleep(2.1)  # past the racy window: the caches hold everything
        rnd = random.Random(7)
        times: dict[str, list[float]] = {"journal": [], "walk": [], "restic": []}
        visited: dict[str, list[int]] = {"journal": [], "walk": []}
        order = ["journal", "walk", "restic"]
        for r in range(args.runs):
            for p in rnd.sample(files, args.changed):
                with open(p, "a") as f:
                    f.write(f"changed in round {r}\n")
            time.sleep(2.1)
            for tool in order:
                walk_metadata(tree)
                t = time.perf_counter()
                if tool == "restic":
                    subprocess.run(["restic", "backup", "-q", str(tree)], env=env, check=True, capture_output=True)
                else:
                    res = cs(homes[tool], "backup")
                    visited[tool].append(res["paths_visited"])
                    if tool == "journal":
                        assert res["change_journal"]["used"], res["change_journal"]
                times[tool].append(time.perf_counter() - t)
            order = order[1:] + order[:1]
    finally:
        daemon.terminate()
        daemon.wait(30)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{args.files} files, {args.changed} changed per round, medians of {args.runs} rounds "
          f"(first backups: journal home {first['journal']['seconds']:.1f} s engine time)\n")
    print(f"{'backup after the change':40}{'seconds':>10}{'paths visited':>16}")
    print(f"{'corestate, daemon + change journal':40}{med['journal']:>10.2f}{statistics.median(visited['journal']):>16.0f}")
    print(f"{'corestate, full walk (no daemon)':40}{med['walk']:>10.2f}{statistics.median(visited['walk']):>16.0f}")
    print(f"{'restic':40}{med['restic']:>10.2f}{'(full walk)':>16}")
    print(f"\nrestic / journal: {med['restic'] / med['journal']:.1f}x;  full walk / journal: "
          f"{med['walk'] / med['journal']:.1f}x  (times include each CLI's start, ~0.3-0.5 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
