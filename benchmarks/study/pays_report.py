"""The BENCHMARKS.md section of the distillation-that-pays study, rendered from what its stages
wrote: the published teachers' provenance (``benchmarks/weights/<task>/teacher_{a,b}.json``) and
``benchmarks/results/pays_<task>_{plateau,screen,final}.json``. Stages not run yet are said to
be so; nothing is typed by hand, so every number in the section has its command beside it.

    python -m benchmarks.study.pays_report --task derain                # print the Markdown
    python -m benchmarks.study.pays_report --task derain --update BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks import sections
from benchmarks.study.configs import Task
from benchmarks.study.pays import RESULTS, TASKS, WEIGHTS, budget_suffix
from benchmarks.study.report import paired_text
from slkd.metrics import task_uses_y_channel

#: headings of the sections appended when BENCHMARKS.md has none yet
HEADINGS = {"denoise": "### 12.1 Denoising σ = 25 (CBSD432 → CBSD68, Kodak24)",
            "derain": "### 12.2 Deraining, Rain100L (84 of 200 training pairs → the 100 test pairs)"}


def section_key(task: Task) -> str:
    return f"pays_{task.key}"


def _f(value, spec: str = ".2f") -> str:
    return "–" if value is None else format(value, spec)


def _minutes(seconds) -> str:
    return "–" if seconds is None else f"{seconds / 60:.0f} min"


def _spread(s: dict | None) -> str:
    """'mean ± std (min–max)' over seeds."""
    if not s:
        return "–"
    if s["n"] == 1:
        return f"{s['mean']:.2f} (1 seed)"
    return f"{s['mean']:.2f} ± {s['std']:.2f} ({s['min']:.2f}–{s['max']:.2f})"


def _curve(validations: list[dict]) -> str:
    return ", ".join(f"{v['psnr']:.2f} @ {v['step']}" for v in validations) or "–"


def convention(task: Task) -> str:
    """How the task's PSNR is measured (the test sets' ``slkd eval --task``)."""
    return "Y channel (BT.601)" if any(task_uses_y_channel(t) for _, t in task.tests) else "RGB channels"


def teachers_md(folder: Path, result: dict | None, measured: str) -> list[str]:
    rows = []
    for role in ("a", "b"):
        meta = folder / f"teacher_{role}.json"
        if not meta.is_file():
            rows.append(f"| Teacher {role.upper()} | not published yet | | | | |")
            continue
        m = json.loads(meta.read_text())
        v = m["validation"]
        what = "degraded → clean" if role == "a" else "clean → clean (reconstruction)"
        rows.append(f"| Teacher {role.upper()}, {what} | {m['model']} ({m['params'] / 1e6:.2f} M) | {m['iters']} "
                    f"({_minutes(m.get('train_seconds'))}) | {_curve(m['validations'])} | "
                    f"**{_f(v['psnr'])}** @ {v['step']} on {v['dataset']} | `{m['file']}` |")
    lines = [f"**Teachers** (published with their provenance; the command of each is in its JSON; PSNR on the "
             f"{measured}):", "",
             "| teacher | model | iterations (wall-clock) | validation PSNR (dB) @ step | kept | file |",
             "|---|---|--:|---|--:|---|", *rows]
    tests = (result or {}).get("summary", {}).get("tests") or {}
    done = {name: t for name, t in tests.items() if t.get("teacher_a") and t.get("input")}
    if done:
        lines += ["", "Teacher A on the test sets, for the record (nothing is chosen on them; `"
                  + result["command"] + "`): " + "; ".join(
                      f"{name}: **{t['teacher_a']['psnr']:.2f} dB** / SSIM {t['teacher_a']['ssim']:.4f} on "
                      f"{t['images']} images (degraded input {t['input']['psnr']:.2f} dB / {t['input']['ssim']:.4f})"
                      for name, t in done.items()) + "."]
    return lines


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def plateau_md(result: dict | None) -> list[str]:
    if result is None:
        return ["**Plateau**: not run yet (`python -m benchmarks.study.pays plateau`)."]
    s = result["summary"]
    rows = [f"| {r['iters']} | {_f(r['val_psnr'])} | {_f(r['last_quarter_gain'], '+.3f')} "
            f"| {_f(r.get('next_rung_gain'), '+.3f')} | {_minutes(r['seconds'])} | {_curve(r['curve'])} |"
            for r in s["rungs"]]
    teacher = s.get("teacher_a_validation")
    lines = [f"**Plateau of the scratch student** (`{result['command']}`; rule: {s['rule']}):" + _partial(result), "",
             "| budget (it.) | validation PSNR (dB) | last-quarter gain (dB) | next rung's gain (dB) | wall-clock "
             "| curve |",
             "|--:|--:|--:|--:|--:|---|", *rows, "",
             f"Budget found: **{s['budget'] if s['budget'] is not None else 'none of the rungs (extend the ladder)'}**."]
    if teacher is not None:
        lines[-1] += (f" Teacher A on the same split: {_f(teacher['psnr'])} dB, "
                      f"{_f(s['teacher_minus_best_scratch'], '+.2f')} dB above the best scratch rung.")
    return lines


def _partial(result: dict) -> str:
    """A note for a results file written part-way (``--summary-only``)."""
    return (" **Part-way**: written while the stage still ran; a row without a number has not finished."
            if result.get("partial") else "")


def screen_md(result: dict | None) -> list[str]:
    if result is None:
        return ["**Screening**: not run yet (`python -m benchmarks.study.pays screen`)."]
    s = result["summary"]
    order = sorted(s["variants"].items(), key=lambda kv: -(kv[1]["val_psnr"] or float("-inf")))
    rows = [f"| {name} | {r['method']} | {'yes' if r['init'] else 'no'} | {r['student']} | {_f(r['val_psnr'])} | "
            + ("" if name == r["scratch_twin"] else f"{_f(r['minus_scratch_twin'], '+.2f')} ({r['scratch_twin']})")
            + f" | {_minutes(r['seconds'])} |" for name, r in order]
    return [f"**Screening, every variant tried** (`{result['command']}`; seed {s['seed']}, {s['iters']} "
            f"iterations, {s['validation']} only — one seed, so differences below ~0.1 dB rank nothing):"
            + _partial(result), "",
            "| variant | method | teacher init | student | validation PSNR (dB) | − its scratch twin | wall-clock |",
            "|---|---|---|---|--:|--:|--:|", *rows]


def final_md(result: dict | None, task: Task) -> list[str]:
    if result is None:
        return ["**Final tables**: not run yet (`python -m benchmarks.study.pays final`)."]
    s = result["summary"]
    fam = s["families"]
    best = s.get("best_baseline")
    iters = s["iters"]
    longer = s.get("longer", [2 * iters] if s.get("double", True) else [])
    budgets = f"{iters} iterations" + ("".join(f" and {b}" for b in longer) if longer else
                                       " (the runs at twice it left out: `--no-2x`)")
    lines = [f"**Final** (`{result['command']}`; {len(s['seeds'])} seeds, {budgets}; PSNR on the "
             f"{convention(task)}; best baseline chosen on validation: {fam[best]['variant'] if best else '–'}):"
             + _partial(result), "",
             "Validation PSNR (dB) per seed, where the best baseline was chosen: "
             + "; ".join(f"{f['variant']} " + ", ".join(_f(v) for v in f["val_psnr"]) for f in fam.values()) + ".",
             ""]
    suffixes = [(b, budget_suffix(iters, b)) for b in longer]
    for set_name, row in s["sets"].items():
        lines += [f"*{set_name}* (input {_f(row['input'])} dB, Teacher A {_f(row['teacher'])} dB):", ""]
        head = f"| student | PSNR, {iters} it. (dB) | − scratch (paired) |" + "".join(
            f" PSNR, {b} it. | − scratch, {b} it. |" for b, _ in suffixes)
        lines += [head, "|---|--:|---|" + "--:|---|" * len(suffixes)]
        for key, f in fam.items():
            cells = [_spread(row.get(key)), "" if key == "scratch" else paired_text(row.get(f"{key}_minus_scratch"))]
            for _, sfx in suffixes:
                cells += [_spread(row.get(key + sfx)),
                          "" if key == "scratch" else paired_text(row.get(f"{key}_minus_scratch{sfx}"))]
            lines.append(f"| {f['variant']} | " + " | ".join(cells) + " |")
        if best:
            lines += ["", f"SLKD − best baseline: {paired_text(row.get('slkd_minus_best_baseline'))}"
                      + "".join(f"; at {b} iterations: {paired_text(row.get('slkd_minus_best_baseline' + sfx))}"
                                for b, sfx in suffixes) + "."]
        lines += parity_md((s.get("parity") or {}).get(set_name), fam)
        lines.append("")
    for data, row in (s.get("no_reference") or {}).items():
        cells = {"input": row.get("input"), "Teacher A": row.get("teacher"),
                 **{fam[k]["variant"]: row.get(k) for k in fam}}
        lines += [f"*{data}* (no ground truth; BRISQUE and PIQE, lower is better, means over seeds):", "",
                  "| images | BRISQUE | PIQE |", "|---|--:|--:|"]
        lines += [f"| {name} | {_f((v or {}).get('brisque'))} | {_f((v or {}).get('piqe'))} |" for name, v in cells.items()]
        lines.append("")
    if s.get("published"):
        lines.append("Students: " + "; ".join(f"{fam[k]['variant']}: " + ", ".join(f"`{p}`" for p in paths)
                                             for k, paths in s["published"].items() if paths) + ".")
    return lines


def parity_md(parity: dict | None, fam: dict) -> list[str]:
    """Compute parity: each distilled finalist against scratch trained for its wall-clock (earlier
    results files hold SLKD's alone)."""
    if not parity:
        return []
    if "slkd_minus_scratch_parity" in parity:  # a parity row without runs is not printed
        if not parity["slkd_minus_scratch_parity"]:
            return []
        return [f"Compute parity (scratch trained {parity['iters']} iterations, SLKD's wall-clock): "
                f"SLKD − scratch {paired_text(parity['slkd_minus_scratch_parity'])}."]
    lines = ["", "Compute parity (scratch trained for each method's measured wall-clock):", "",
             "| student | its PSNR (dB) | scratch, same wall-clock (iterations) | − that scratch (paired) |",
             "|---|--:|--:|---|"]
    for key, r in parity.items():
        lines.append(f"| {fam[key]['variant']} | {_f(r['psnr'])} | {_f(r['scratch_same_wallclock'])} ({r['iters']}) | "
                     f"{paired_text(r['minus_scratch_parity'])} |")
    return lines


def ablation_md(result: dict | None, task: Task) -> list[str]:
    if result is None:
        return ["**Ablation**: not run yet (`python -m benchmarks.study.pays ablation`)."]
    s = result["summary"]
    lines = [f"**Ablation of {s['full']}, in the paper's form** (`{result['command']}`; {len(s['seeds'])} "
             f"seed(s), {s['iters']} iterations; PSNR on the {convention(task)}; without L_NC / L_ET the part "
             "stays and its distance becomes plain L1 on standardised features; without DRL / IRL the part is "
             "gone):" + _partial(result), ""]
    for set_name, table in s["sets"].items():
        lines += [f"*{set_name}*:", "", "| variant | PSNR (dB) | SSIM | Δ vs full (paired) |", "|---|--:|--:|---|"]
        for label, r in table.items():
            name = s["rows"][label]
            lines.append(f"| {label} (`{name}`) | {_spread(r['psnr'])} | {_f(r['ssim'], '.4f')} | "
                         f"{'' if label == 'full' else paired_text(r['minus_full'])} |")
        lines.append("")
    return lines


def markdown(task: Task, results: Path = RESULTS, weights: Path = WEIGHTS) -> str:
    stage = {name: _load(results / f"pays_{task.key}_{name}.json")
             for name in ("teachers", "plateau", "screen", "final", "ablation")}
    parts = [teachers_md(weights / task.key, stage["teachers"], convention(task)), plateau_md(stage["plateau"]), screen_md(stage["screen"]),
             final_md(stage["final"], task), ablation_md(stage["ablation"], task),
             [f"*Generated by `python -m benchmarks.study.pays_report --task {task_name(task)} --update "
              "BENCHMARKS.md` from the files above.*"]]
    return "\n\n".join("\n".join(p).rstrip() for p in parts) + "\n"


def task_name(task: Task) -> str:
    return next(name for name, t in TASKS.items() if t is task)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.study.pays_report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=tuple(TASKS), required=True)
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--weights", type=Path, default=WEIGHTS)
    p.add_argument("--update", type=Path, metavar="MD", help="replace the task's section of this file")
    args = p.parse_args(argv)
    task = TASKS[args.task]
    text = markdown(task, args.results, args.weights)
    if args.update is None:
        sys.stdout.write(text)
        return 0
    if not args.update.is_file():
        print(f"error: {args.update}: file not found", file=sys.stderr)
        return 2
    sections.update_section(args.update, section_key(task), text, HEADINGS[args.task])
    print(f"updated {args.update} ({section_key(task)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
