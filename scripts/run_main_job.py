"""Runs the README's main job on several seeds (or reads finished runs) and writes the
figures into README.md.

    python scripts/run_main_job.py --seeds 0,1,2,3,4               # one seed after another
    python scripts/run_main_job.py --seeds 0,1,2,3,4 --parallel 2  # two at a time
    python scripts/run_main_job.py --seeds 0,1,2,3,4 --report-only
    python scripts/run_main_job.py --timing --seeds 0 --workdir runs/main_idle  # idle check
    python scripts/run_main_job.py --workdir runs/main_m2 --out docs/main_job_m2.md  # machine 2
    python scripts/run_main_job.py --config configs/crafter.py --seeds 0,1,2 \
        --workdir runs/crafter3 --out docs/crafter_job.md  # another job: table + per task

Seed N runs `python -m grow_jax.main --config=CONFIG --workdir=WORKDIR/seedN
--config.seed=N` (the default README command with another seed). The block between
`<!-- main-job:start -->` and `<!-- main-job:end -->` in README.md is regenerated from each
WORKDIR/seedN/metrics.jsonl and timing.json; the learning curves of all seeds (mean ± std)
go to docs/tiny_cpu_learning_curve.png. No number in that block is typed by hand.

The machine is shared, so every run records its 1-min load average (sampled every 5 s)
and its CPU time (user + sys of the run). On an idle machine, a run that keeps at least one
core busy takes no longer than its CPU time, and no less than CPU time / cores. The table
gives the CPU time as the idle-machine estimate, beside the wall time measured under load.
`--timing` is the direct measurement: it runs seeds one at a time (meant for an idle
machine; the load average it saw is reported), writes their wall time into a second README
block and checks whether each seed's evaluation figures equal its row in the table above,
that is whether the table reproduces on the machine the timing was taken on.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time

import numpy as np

from grow_jax.hostinfo import cpu_label

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START, END = "<!-- main-job:start -->", "<!-- main-job:end -->"
# The idle-machine check (--timing) writes its own block, after the table's.
TIMING_START, TIMING_END = "<!-- main-job-timing:start -->", "<!-- main-job-timing:end -->"
PLOT = os.path.join("docs", "tiny_cpu_learning_curve.png")
MAIN_CONFIG = "configs/tiny_cpu.py"  # the README's main job; its bars and table apply to it
# The acceptance bars of the main job (issue 9).
MIN_GAIN, MIN_MEAN_GAIN, MIN_END_OVER_BEST, MAX_WALL_MIN = 20.0, 40.0, 0.9, 10.0


def _expert(cfg: dict) -> str:
    """Who played the SFT demonstrations: BabyAI's bot, or another suite's scripted expert."""
    return "bot" if cfg["env"].get("suite", "babyai") == "babyai" else "scripted-expert"


def group_layouts(cfg: dict) -> str:
    """' over k world seeds (G / k each)' when a group spans several layouts."""
    k = cfg["rl"].get("seeds_per_group", 1)
    return f" over {k} world seeds ({cfg['rl']['group_size'] // k} episodes each)" if k > 1 else ""


def seed_command(workdir: str, config: str, seed: int, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "grow_jax.main", f"--config={config}", f"--workdir={workdir}",
            f"--config.seed={seed}", *extra]


def run_parallel(jobs: list[tuple[str, list[str]]], parallel: int, tag: str, poll_s: float):
    """Runs (workdir, cmd) jobs, at most `parallel` at once, each logging to
    WORKDIR/stdout.log; yields (workdir, cmd, exit code, timing) as each one ends, timing
    holding wall and CPU time, peak RSS, the command and the 1-min load average seen."""
    todo, live = list(jobs), {}  # pid -> (workdir, cmd, t0, load samples, log file)
    while todo or live:
        while todo and len(live) < parallel:
            wd, cmd = todo.pop(0)
            os.makedirs(wd, exist_ok=True)
            log = open(os.path.join(wd, "stdout.log"), "w")
            p = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            live[p.pid] = (wd, cmd, time.time(), [os.getloadavg()[0]], log)
            print(f"[{tag}] started: {' '.join(cmd[1:])}", flush=True)
        time.sleep(poll_s)
        for pid in list(live):
            wd, cmd, t0, loads, log = live[pid]
            loads.append(os.getloadavg()[0])
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done == 0:
                continue
            log.close()
            del live[pid]
            yield wd, cmd, os.waitstatus_to_exitcode(status), dict(
                wall_s=time.time() - t0, cpu_s=usage.ru_utime + usage.ru_stime,
                peak_rss_mib=usage.ru_maxrss / 1024, command=" ".join(["python", *cmd[1:]]),
                load_avg_mean=float(np.mean(loads)), load_avg_max=float(np.max(loads)))


def run_seeds(root: str, config: str, seeds: list[int], extra: list[str], parallel: int):
    """Runs every seed (at most `parallel` at once); writes WORKDIR/seedN/timing.json."""
    jobs, seed_of = [], {}
    for seed in seeds:
        wd = os.path.join(root, f"seed{seed}")
        if os.path.exists(os.path.join(wd, "checkpoints")):
            raise SystemExit(f"{wd} already holds a run; pick a new --workdir")
        jobs.append((wd, seed_command(wd, config, seed, extra)))
        seed_of[wd] = seed
    failed = []
    for wd, _, rc, timing in run_parallel(jobs, parallel, "main-job", poll_s=5):
        seed = seed_of[wd]
        if rc != 0:
            failed.append(seed)
            print(f"[main-job] seed {seed} failed (exit {rc}); see {wd}/stdout.log", flush=True)
            continue
        with open(os.path.join(wd, "timing.json"), "w") as f:
            json.dump(dict(timing, cpus=os.cpu_count(), cpu_model=cpu_label(),
                           parallel=parallel), f)
        print(f"[main-job] seed {seed} done in {timing['wall_s'] / 60:.1f} min", flush=True)
    if failed:
        raise SystemExit(f"seeds {failed} failed")


def task_success(wd: str, step: int) -> dict[str, float]:
    """Success rate per task of the evaluation at iteration `step` (WORKDIR/eval_parts)."""
    out: dict[str, list[bool]] = {}
    with open(os.path.join(wd, "eval_parts", f"iter{step:06d}.jsonl")) as f:
        for line in f:
            if line.strip():
                for ep in json.loads(line)["episodes"]:
                    out.setdefault(ep["task_id"], []).append(bool(ep["success"]))
    return {k: 100 * float(np.mean(v)) for k, v in out.items()}


def mean_std(xs) -> str:
    """'mean ± std' over seeds (sample std; 0 for one seed), one decimal."""
    xs = np.asarray(xs, float)
    return f"{xs.mean():.1f} ± {xs.std(ddof=1) if len(xs) > 1 else 0.0:.1f}"


def seed_summary(wd: str) -> dict:
    rows = [json.loads(x) for x in open(os.path.join(wd, "metrics.jsonl")) if x.strip()]
    evals = [r for r in rows if r.get("phase") == "eval"]
    if len(evals) < 2:
        raise SystemExit(f"{wd}: needs the start and final evaluation rows")
    timing = json.load(open(os.path.join(wd, "timing.json")))
    rates = [100 * r["eval_success_rate"] for r in evals]
    train = [r for r in rows if r.get("phase") == "train"]
    return dict(start=rates[0], end=rates[-1], best=max(rates), gain=rates[-1] - rates[0],
                curve=[(r.get("env_steps", 0), r["step"], 100 * r["eval_success_rate"])
                       for r in evals],
                episodes=evals[-1]["eval_episodes"], timing=timing,
                env_steps=train[-1]["env_steps"] if train else 0, iterations=len(train),
                early_stops=sum(bool(r.get("early_stopped")) for r in train),
                config=json.load(open(os.path.join(wd, "config.json"))))


def plot(per_seed: dict[int, dict], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for seed, s in per_seed.items():
        it = [c[1] for c in s["curve"]]
        ax.plot(it, [c[2] for c in s["curve"]], "o-", lw=1, ms=3, alpha=0.6,
                label=f"seed {seed}")
    iters = sorted(set.intersection(*[{c[1] for c in s["curve"]} for s in per_seed.values()]))
    if iters:
        ys = np.array([[dict((c[1], c[2]) for c in s["curve"])[i] for i in iters]
                       for s in per_seed.values()])
        mean, std = ys.mean(0), ys.std(0)
        ax.plot(iters, mean, "k-", lw=2, label="mean")
        ax.fill_between(iters, mean - std, mean + std, color="k", alpha=0.15, label="± std")
    ax.set_xlabel("RL iteration")
    ax.set_ylabel("held-out success (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=7, ncol=2)
    ax.set_title(f"main job, {len(per_seed)} seeds")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def _runs_at_a_time(per: dict) -> str:
    """"2 runs" or, for seeds run by separate calls, e.g. "2 runs (seed 0: 1 run)"."""
    n = {s: p["timing"]["parallel"] for s, p in per.items()}
    common = max(set(n.values()), key=list(n.values()).count)
    odd = [f"seed {s}: {k} run{'s' if k > 1 else ''}" for s, k in n.items() if k != common]
    return f"{common} run{'s' if common > 1 else ''}" + (f" ({', '.join(odd)})" if odd else "")


def report(root: str, seeds: list[int], argv: str, plot_path: str = PLOT,
           link: str | None = None, bars: bool = True) -> str:
    """The table block; the curves go to PLOT_PATH (relative to the repository), linked
    as LINK (default: PLOT_PATH, as README.md at the root sees it). BARS: the main job's
    acceptance table (meaningless for another config's job)."""
    per = {s: seed_summary(os.path.join(root, f"seed{s}")) for s in seeds}
    first = per[seeds[0]]
    cfg, t = first["config"], first["timing"]
    gains = np.array([p["gain"] for p in per.values()])
    walls = np.array([p["timing"]["wall_s"] / 60 for p in per.values()])
    idle = np.array([p["timing"]["cpu_s"] / 60 for p in per.values()])
    load_mean = np.mean([p["timing"]["load_avg_mean"] for p in per.values()])
    load_max = max(p["timing"]["load_avg_max"] for p in per.values())
    std = gains.std(ddof=1) if len(gains) > 1 else 0.0
    lines = [
        f"Measured by `{argv}` on {t['cpus']} CPUs ({t['cpu_model']}), "
        f"{_runs_at_a_time(per)} at a time, on a machine shared with other work (1-min load "
        f"average during the runs: mean {load_mean:.1f}, max {load_max:.1f}). Seed "
        f"{seeds[0]} ran `{first['timing']['command'].replace(ROOT + os.sep, '')}`, the "
        "others the same with their seed.",
        "",
        f"Setup: {', '.join(cfg['env']['tasks'])} (cap {cfg['env']['max_steps']} decisions); "
        f"SFT on {cfg['sft']['demo_episodes']} {_expert(cfg)} episodes for "
        f"{cfg['sft']['steps']} steps; "
        f"GROW RL {first['iterations']} iterations x {cfg['rl']['groups_per_iter']} groups x "
        f"G={cfg['rl']['group_size']} episodes{group_layouts(cfg)} ({first['env_steps']} env "
        "steps for seed "
        f"{seeds[0]}); evaluation on {first['episodes']} held-out episodes (seeds from "
        f"{cfg['eval']['seed_offset']}), {'greedy' if cfg['eval']['greedy'] else 'sampled'} "
        "actions, every "
        f"{cfg['eval']['every']} iterations.",
        "",
        "| seed | SFT start | end | best | gain | end / best | KL early stops | wall (min) "
        "| CPU time (min) | mean load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s, p in per.items():
        tm = p["timing"]
        lines.append(
            f"| {s} | {p['start']:.1f}% | {p['end']:.1f}% | {p['best']:.1f}% | "
            f"**{p['gain']:+.1f}** | {p['end'] / max(p['best'], 1e-9):.2f} | "
            f"{p['early_stops']}/{p['iterations']} | {tm['wall_s'] / 60:.1f} | "
            f"{tm['cpu_s'] / 60:.1f} | {tm['load_avg_mean']:.1f} |")
    ratio = min(p["end"] / max(p["best"], 1e-9) for p in per.values())
    se = 100 * math.sqrt(2 * 0.25 / first["episodes"])
    lines += [
        "",
        f"Gain over {len(seeds)} seeds: **{gains.mean():+.1f} ± {std:.1f} points** (mean ± "
        f"std), range {gains.min():+.1f} to {gains.max():+.1f}; one seed's "
        f"gain has a sampling error of at most ± {2 * se:.1f} points (2 standard errors, "
        f"{first['episodes']} episodes per evaluation).",
        f"Wall time per run: {walls.mean():.1f} min on average (max {walls.max():.1f}) as "
        f"measured under that load. CPU time per run: {idle.mean():.1f} min (max "
        f"{idle.max():.1f}). An idle machine that keeps at least one core busy needs no more "
        f"than that, and no less than 1/{t['cpus']} of it.",
    ]
    lines += [] if not bars else [
        "",
        "| acceptance bar | measured | |",
        "|---|---|---|",
        f"| every seed gains >= +{MIN_GAIN:.0f} points | lowest {gains.min():+.1f} | "
        f"{'yes' if gains.min() >= MIN_GAIN else 'no'} |",
        f"| mean gain >= +{MIN_MEAN_GAIN:.0f} points | {gains.mean():+.1f} | "
        f"{'yes' if gains.mean() >= MIN_MEAN_GAIN else 'no'} |",
        f"| no seed ends below {MIN_END_OVER_BEST:.0%} of its best evaluation | lowest end/best "
        f"{ratio:.2f} | {'yes' if ratio >= MIN_END_OVER_BEST else 'no'} |",
        f"| <= {MAX_WALL_MIN:.0f} min per run on {t['cpus']} idle cores | CPU time "
        f"{idle.max():.1f} min (wall {walls.max():.1f} min under load) | "
        f"{'yes' if idle.max() <= MAX_WALL_MIN else 'no'} |",
    ]
    lines += [
        "",
        f"![learning curves of every seed]({link or plot_path})",
    ]
    plot(per, os.path.join(ROOT, plot_path))
    return "\n".join(lines)


def reproduction_report(root: str, seeds: list[int], table: dict) -> str:
    """Each seed's (SFT start, end, best) beside its row in README.md's table."""
    lines = ["| seed | this run: SFT start, end, best | README table's row | same |",
             "|---|---|---|---|"]
    same = 0
    for s in seeds:
        p = seed_summary(os.path.join(root, f"seed{s}"))
        got = tuple(f"{p[k]:.1f}%" for k in ("start", "end", "best"))
        want = table.get(s)
        same += want == got
        lines.append(f"| {s} | {', '.join(got)} | {', '.join(want) if want else 'none'} | "
                     f"{'yes' if want == got else 'no' if want else '-'} |")
    lines += ["", f"{same} of {len(seeds)} seeds reproduce their README row digit for digit."]
    return "\n".join(lines)


def per_task_report(root: str, seeds: list[int]) -> str:
    """Success per task at the first and the last evaluation, mean ± std over seeds: where
    a multi-task job's gain (or its absence) comes from."""
    start, end = {}, {}
    for s in seeds:
        wd = os.path.join(root, f"seed{s}")
        curve = seed_summary(wd)["curve"]
        steps = (curve[0][1], curve[-1][1])
        for acc, step in zip((start, end), steps):
            for task, rate in task_success(wd, step).items():
                acc.setdefault(task, []).append(rate)

    lines = ["| task | SFT start (%) | end (%) | gain (points) |", "|---|---|---|---|"]
    for task in start:
        gains = [b - a for a, b in zip(start[task], end[task])]
        lines.append(f"| {task} | {mean_std(start[task])} | {mean_std(end[task])} | "
                     f"{mean_std(gains)} |")
    return "\n".join(lines)


def doc_report(root: str, seeds: list[int], argv: str, out: str,
               title: str = "The main job on another machine",
               config: str = MAIN_CONFIG) -> str:
    """--out FILE.md: a page of its own (the table, its curves as FILE_curves.png and, for
    the main job's config, its bars and the comparison with README.md's table: a run on
    another machine); for another config (the Crafter job), the table and curves only."""
    stem = os.path.splitext(out)[0]
    plot_path = f"{stem}_curves.png"
    main_job = os.path.normpath(config) == os.path.normpath(MAIN_CONFIG)
    table = report(root, seeds, argv, plot_path,
                   os.path.relpath(plot_path, os.path.dirname(out) or "."), bars=main_job)
    if not main_job:
        return "\n".join([f"# {title}", "", f"Written by `scripts/run_main_job.py --out` "
                          f"for `{config}`.", "", table, "", "## Per task", "",
                          per_task_report(root, seeds), ""])
    readme = table_rows(open(os.path.join(ROOT, "README.md")).read())
    return "\n".join([
        f"# {title}", "",
        "Written by `scripts/run_main_job.py --out`; its last section sets each seed beside "
        "its row in README.md's table.", "",
        table, "", "## Against the README's table", "",
        reproduction_report(root, seeds, readme), ""])


def table_rows(readme: str) -> dict[int, tuple[str, str, str]]:
    """seed -> (SFT start, end, best) as printed in README.md's main-job table."""
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md lacks the {START} ... {END} markers")
    rows = {}
    for line in readme.split(START, 1)[1].split(END, 1)[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0].isdigit():
            rows[int(cells[0])] = tuple(cells[1:4])
    return rows


def timing_report(root: str, seeds: list[int], argv: str, table: dict) -> str:
    """The --timing block: each seed's wall time run alone, against the bar, and whether
    its evaluation figures reproduce the table's row."""
    lines = [f"Idle-machine check, measured by `{argv}`: each seed run alone, one after "
             "another.", "",
             "| seed | wall (min) | CPU time (min) | 1-min load (mean / max) | SFT start, end, "
             "best | the table's row | reproduced |", "|---|---|---|---|---|---|---|"]
    walls = []
    for s in seeds:
        p = seed_summary(os.path.join(root, f"seed{s}"))
        tm = p["timing"]
        walls.append(tm["wall_s"] / 60)
        got = tuple(f"{p[k]:.1f}%" for k in ("start", "end", "best"))
        want = table.get(s)
        lines.append(
            f"| {s} | {walls[-1]:.1f} | {tm['cpu_s'] / 60:.1f} | {tm['load_avg_mean']:.1f} / "
            f"{tm['load_avg_max']:.1f} | {', '.join(got)} | "
            f"{', '.join(want) if want else 'none'} | "
            f"{'yes' if want == got else 'no' if want else '-'} |")
    lines += ["", f"Bar: <= {MAX_WALL_MIN:.0f} min per run on {tm['cpus']} cores: largest wall "
              f"time {max(walls):.1f} min: {'met' if max(walls) <= MAX_WALL_MIN else 'not met'} "
              "(read it with the load average: above ~1 the cores were shared)."]
    return "\n".join(lines)


def write_readme(block: str, start: str = START, end: str = END) -> None:
    """Replaces README.md's block between START and END; a missing timing block is added
    right after the main-job table."""
    path = os.path.join(ROOT, "README.md")
    text = open(path).read()
    if start not in text and start == TIMING_START and END in text:
        text = text.replace(END, f"{END}\n\n{TIMING_START}\n{TIMING_END}", 1)
    if start not in text or end not in text:
        raise SystemExit(f"README.md lacks the {start} ... {end} markers")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w") as f:
        f.write(f"{head}{start}\n{block}\n{end}{tail}")


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--seeds: expected comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise SystemExit(f"--seeds: expected distinct seeds, got {text!r}")
    return seeds


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=os.path.join("runs", "main_job"),
                    help="root folder; seed N runs in WORKDIR/seedN")
    ap.add_argument("--config", default=MAIN_CONFIG)
    ap.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds")
    ap.add_argument("--parallel", type=int, default=1, help="runs at a time")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--no-readme", action="store_true", help="print the block only")
    ap.add_argument("--out", help="write the table, its curves (OUT_curves.png) and the "
                                  "comparison with README.md's table to this .md file "
                                  "instead of README.md (a run on another machine)")
    ap.add_argument("--title", default="The main job on another machine",
                    help="with --out: the page's heading")
    ap.add_argument("--timing", action="store_true",
                    help="idle-machine check: seeds one at a time; writes their wall time "
                         "and whether they reproduce the table into a second README block")
    ap.add_argument("extra", nargs="*", help="extra flags for grow_jax.main (after --)")
    args = ap.parse_args()
    seeds = parse_seeds(args.seeds)
    if args.parallel < 1:
        raise SystemExit(f"--parallel must be >= 1, got {args.parallel}")
    if args.timing and args.parallel != 1:
        raise SystemExit("--timing runs seeds one at a time: drop --parallel")
    root = os.path.abspath(args.workdir)
    if not args.report_only:
        run_seeds(root, args.config, seeds, args.extra, args.parallel)
    argv = " ".join(["python scripts/run_main_job.py", f"--seeds {args.seeds}",
                     *([f"--parallel {args.parallel}"] if args.parallel > 1 else []),
                     *([f"--workdir {args.workdir}"] if args.workdir != os.path.join(
                         "runs", "main_job") else []),
                     *([f"--config {args.config}"] if args.config != MAIN_CONFIG
                       else []),
                     *(["--timing"] if args.timing else []),
                     *([f"--out {args.out}"] if args.out else []),
                     *([f"--title {shlex.quote(args.title)}"] if args.out and args.title
                       != ap.get_default("title") else []),
                     *(["--", *args.extra] if args.extra else [])])
    if args.out:
        if args.timing:
            raise SystemExit("--out and --timing: pick one")
        block = doc_report(root, seeds, argv, args.out, args.title, args.config)
        with open(os.path.join(ROOT, args.out), "w") as f:
            f.write(block)
        print(block)
        return
    if args.timing:
        table = table_rows(open(os.path.join(ROOT, "README.md")).read())
        block, markers = timing_report(root, seeds, argv, table), (TIMING_START, TIMING_END)
    else:
        block, markers = report(root, seeds, argv), (START, END)
    if not args.no_readme:
        write_readme(block, *markers)
    print(block)


if __name__ == "__main__":
    main()
