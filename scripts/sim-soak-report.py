#!/usr/bin/env python3
"""Helpers of scripts/sim-soak.sh.

  sim-soak-report.py chunk LOG SCENARIO FIRST SEEDS STATUS
      Reads the output of one chunk (the test binary run with SIM_KEEP_GOING=1) and
      prints a line per failing seed, "seed<TAB>first violation<TAB>replay command",
      then "ran<TAB><seeds run>".
  sim-soak-report.py section LEDGER REPORT [SCENARIO...]
      Rebuilds the "## Soak" section of REPORT (reports/sim.md) from the ledger
      (reports/sim-soak.tsv), keeping the rest of the file; appends it if missing. The
      SCENARIOs given come first in the table, in that order, with or without seeds.
"""

import os
import re
import sys
from collections import defaultdict

TRACE = re.compile(r"sim: scenario=(\S+) seed=(\d+) trace=[0-9a-f]+(?: FAILED: (.*))?$")
TARGET = 10_000


def chunk(path, scenario, first, seeds, status):
    lines = open(path, errors="replace").read().splitlines()
    traced, failed = set(), []
    for i, line in enumerate(lines):
        # search, not match: the first seed's line follows "test scenarios::X ... ".
        m = TRACE.search(line)
        if not m or m.group(1) != scenario:
            continue
        seed = int(m.group(2))
        traced.add(seed)
        if m.group(3) is None:
            continue
        # The report: header, swarm and plan (indented), then each violation as
        # "[check] what" and its excerpt, then the replay command.
        what, replay = m.group(3), None
        for later in lines[i + 1 :]:
            if later.startswith("[") and what == m.group(3):
                what = later.strip()
            if later.startswith("replay: "):
                replay = later[len("replay: ") :]
                break
        failed.append((seed, what, replay))
    ran = max(traced) - first + 1 if traced else 0
    if status != 0 and not any("FAILED seeds [" in l for l in lines):
        # The process stopped inside a seed (a panic outside the checks, e.g. a host
        # failed): that seed failed and the rest of the chunk did not run.
        said = [l.strip() for l in lines if "panicked at" in l or "a host failed" in l]
        seed = None
        for l in said:
            m = re.search(r"seed=(\d+)", l)
            if m:
                seed = int(m.group(1))
        if seed is None:
            seed = min(max(traced) + 1 if traced else first, first + seeds - 1)
        what = f"exit status {status}"
        at = next((i for i, l in enumerate(lines) if "panicked at" in l), None)
        if at is not None:
            what = " ".join(l.strip() for l in lines[at : at + 2] if l.strip())
        elif said:
            what = said[0]
        if seed not in {f[0] for f in failed}:
            failed.append((seed, f"the chunk stopped: {what}", None))
        ran = max(ran, seed - first + 1)
    for seed, what, replay in failed:
        replay = replay or f"SIM_SEED={seed} cargo test --features sim --test sim scenarios::{scenario}"
        print(f"{seed}\t{what}\t{replay}")
    print(f"ran\t{ran}")


def hours(h):
    return f"{h * 60:.0f} min" if h < 1 else f"{h:.1f} h"


def section(ledger, report, scenarios):
    rows = []
    with open(ledger) as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 7 or cols[0] == "date":
                continue
            rows.append(cols)
    seeds = defaultdict(lambda: defaultdict(set))  # scenario -> commit -> seeds
    failures = defaultdict(int)
    wall = defaultdict(float)
    runs = defaultdict(int)
    order = list(scenarios)
    for date, commit, scenario, first, n, failed, secs, *_ in rows:
        if scenario not in order:
            order.append(scenario)
        seeds[scenario][commit].update(range(int(first), int(first) + int(n)))
        failures[scenario] += int(failed)
        wall[scenario] += float(secs)
        runs[scenario] += int(n)
    cores = os.cpu_count() or 1
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    commits = []
    for r in rows:
        if r[1] not in commits:
            commits.append(r[1])
    out = [
        "## Soak",
        "",
        "Long runs of every scenario (`scripts/sim-soak.sh HOURS`, release build, chunks of",
        "consecutive seeds on all cores; the first seed of each chunk and every seed of every",
        "10th chunk replayed for determinism), from the ledger reports/sim-soak.tsv; failing",
        "seeds, with their replay commands, are in reports/sim-soak-failures.md.",
    ]
    if not rows:
        out += ["", "No soak has run yet.", ""]
    else:
        total_h = sum(wall.values()) / 3600
        out += [
            "",
            f"{len(rows)} chunks from {rows[0][0]} to {rows[-1][0]}, at commits {', '.join(commits)}.",
            "",
            "Seeds: distinct seeds run at each commit, summed over the commits (seeds per commit",
            "in brackets). Seeds per hour per core: seeds run over the chunks' wall time (each",
            "chunk is one process on one core; replays included). 10,000 seeds: the time one",
            f"scenario needs for {TARGET:,} seeds on one core of this machine ({cores} cores, {model})",
            "at that rate.",
            "",
            "| scenario | seeds | commits | failures | seeds / hour / core | 10,000 seeds, one core |",
            "|---|---|---|---|---|---|",
        ]
        need = 0.0
        mean = sum(runs.values()) * 3600 / sum(wall.values()) if sum(wall.values()) > 0 else 1.0
        for s in order:
            per_commit = seeds[s]
            distinct = sum(len(v) for v in per_commit.values())
            # A scenario not run yet goes at the mean rate of the others.
            rate = runs[s] * 3600 / wall[s] if wall[s] > 0 else mean
            need += max(0, TARGET - distinct) / rate
            which = ", ".join(f"{c} ({len(v)})" for c, v in per_commit.items()) or "-"
            shown = f"{rate:.0f}" if wall[s] > 0 else "-"
            out.append(f"| {s} | {distinct} | {which} | {failures[s]} | {shown} | {hours(TARGET / rate)}{'' if wall[s] > 0 else ' (mean rate)'} |")
        allseeds = sum(sum(len(v) for v in seeds[s].values()) for s in order)
        out += [
            "",
            f"In all {allseeds} seeds in {total_h:.1f} core-hours. {TARGET:,} seeds of each of the "
            f"{len(order)} scenarios take about {hours(sum(TARGET * (wall[s] / 3600 / runs[s] if runs[s] else 1 / mean) for s in order) / cores)} "
            f"on the {cores} cores; about {hours(need / cores)} to go from here.",
            "",
        ]
    text = open(report).read() if os.path.exists(report) else ""
    lines = text.splitlines()
    try:
        start = lines.index("## Soak")
        end = next((i for i in range(start + 1, len(lines)) if re.match(r"#{1,2} ", lines[i])), len(lines))
        lines[start:end] = out
    except ValueError:
        while lines and not lines[-1].strip():
            lines.pop()
        lines += [""] + out
    while lines and not lines[-1].strip():
        lines.pop()
    with open(report, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote the Soak section of {report}")


def main():
    if len(sys.argv) == 7 and sys.argv[1] == "chunk":
        chunk(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
    elif len(sys.argv) >= 4 and sys.argv[1] == "section":
        section(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
