"""The BENCHMARKS.md section of a GPU check report (``benchmarks/gpu_check.py --markdown``)."""

from __future__ import annotations

from pathlib import Path

from benchmarks import sections

#: the section of BENCHMARKS.md this report owns
SECTION, HEADING = "gpu_check", "## 10. GPU check (one NVIDIA GPU)"


def _f(value, fmt: str = ".2f") -> str:
    return "–" if value is None else format(value, fmt)


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:+.1f} %"


def _ok(ok) -> str:
    return "not measured" if ok is None else "**yes**" if ok else "**no**"


def markdown(report: dict) -> str:
    m, st = report["machine"], report["stages"]
    lines = [f"Command: `{report['command']}` at commit `{report.get('commit')}`"
             + (" (**dry run** on the CPU: toy sizes, numbers mean nothing)" if report["dry_run"] else "") + ".",
             f"Machine: {m.get('gpu', 'no GPU')} ({m.get('gpu_memory_gib', '–')} GiB), driver "
             f"{m.get('driver', '–')}, torch {m['torch']}, CUDA {m.get('cuda')}, cuDNN {m.get('cudnn', '–')}, "
             f"Python {m['python']}, {m['cpu_count']} CPU cores; whole check {report.get('seconds', '–')} s "
             f"of a {report.get('budget_s', '–')} s budget."]
    if "scale" in report:
        lines += ["", *_scale(report["scale"])]
    t = st.get("tests")
    if t:
        failed = t.get("failed") or []
        lines += ["", f"**1. `pytest -m cuda`** (tests/test_cuda.py): {t.get('passed', '–')} passed, "
                  f"{len(failed)} failed, {t.get('skipped', '–')} skipped, in {t['seconds']} s"
                  + (f"; failed: {', '.join(failed)}" if failed else "") + (" (stopped at its time limit)"
                                                                             if t.get("timed_out") else "") + "."]
    n = st.get("nccl")
    if n:
        lines.append(f"**2. torchrun, 1 process** (`slkd distill`, SLKD, tiny pair): backend `{n.get('backend')}`, "
                     f"stopped at step 2 and resumed → max weight difference to the uninterrupted run "
                     f"{_f(n.get('max_weight_diff'), '.2g')}; {'OK' if n.get('ok') else 'FAILED'}.")
    lines += _compilation(st)
    if "steps_paper" in st:
        lines += _steps(st["steps_paper"], 4)
    if "inference" in st:
        lines += _inference(st["inference"])
    if "steps_tiny" in st:
        lines += _steps(st["steps_tiny"], 6)
    if "compress" in st:
        lines += _compress(st["compress"])
    if "timings" in st or "teachers" in st:  # reports of the check before the scale stages
        lines += _legacy(st)
    return "\n".join(lines)


def _scale(s: dict) -> list[str]:
    v = s["verdict"]
    ps = s["paper_step_ms"]
    inf = s["inference_1024"]
    rows = [("data share of the training step (FAKD, paper pair, its fastest configuration)", v["data_share"],
             _pct(s["data_share"])),
            (f"FAKD step: eager float32 {_f(ps['fakd_eager_fp32'], '.1f')} ms → fastest "
             f"({(s.get('fakd_best_config') or '–').replace('_', ' ')}) {_f(ps['fakd_best'], '.1f')} ms",
             v["fakd_speedup"], f"{_f(s['fakd_speedup'])}×"),
            (f"student vs teacher inference at {inf.get('size') or '–'}² (each on its fastest path), share of the "
             f"MACs ratio {_f(inf.get('macs_ratio'))}×", v["inference_share"],
             f"{_f(inf.get('speedup'))}× = {_f(None if inf.get('share') is None else 100 * inf['share'], '.0f')} %"),
            ("bf16 autocast vs float32, FAKD step ("
             + (", ".join(f"{k} {_f(x)}×" for k, x in s["bf16_speedup"].items()) or "–") + ")",
             v["bf16_speedup"], f"{_f(v['bf16_speedup']['value'])}×")]
    out = ["**Verdict** against the GPU targets" + {True: ": all met.", False: ": not all met.",
                                                     None: " (not everything was measured)."}[s["targets_met"]], "",
           "| what | target | measured | met |", "|---|---|--:|---|"]
    out += [f"| {what} | {check['rule']} | {value} | {_ok(check['ok'])} |" for what, check, value in rows]
    c = s.get("compress", {})
    if c.get("it_per_s"):
        out += ["", f"`slkd compress` at full size ran {_f(c['it_per_s'])} it/s ({_f(c['step_ms'], '.1f')} ms per step"
                + (f", {_f(c['over_timed_step'])}× the timed eager float32 FAKD step on the same pairs"
                   if c.get("over_timed_step") else "") + ")."]
    return out


def _compilation(st: dict) -> list[str]:
    warm = st.get("warm", {}).get("children", {})
    timed = {}
    for key in ("steps_paper", "steps_tiny"):
        for variant, r in st.get(key, {}).get("variants", {}).items():
            if r.get("mode") == "compiled":
                timed[f"{key.split('_')[1]}_{variant}"] = r
    if not warm and not timed:
        return []
    threads = st.get("warm", {}).get("compile_threads") or {}
    out = ["", "**3. Compilation** (`train.compile`: the whole step forward; CUDA graphs on the GPU). Cold: the first "
           "step in phase 1, with every compilation running beside it"
           + (f" ({threads.get('priority')} compile workers for those the verdict reads, "
              f"{threads.get('other')} for the others)" if threads else "") + "; warm: the first step of the "
           "timing stage, from the on-disk cache.", "",
           "| configuration | cold s | warm s | graphs | graph breaks | CUDA-graph skips |",
           "|---|--:|--:|--:|--:|--:|"]
    order = ("paper", "tiny", "inference")
    for name in sorted(dict.fromkeys([*warm, *timed]), key=lambda n: order.index(n.split("_")[0])):
        w, t = warm.get(name, {}), timed.get(name, {})
        if not w:
            cold = "–"
        elif w.get("rc") == 0:
            cold = _f(w.get("compile_s"), ".0f")
        else:
            cold = "timed out" if w.get("timed_out") else f"failed (rc {w.get('rc')})"
        src = t or w
        counts = " | ".join(str(src.get(k, "–")) for k in ("graphs", "graph_breaks", "cudagraph_skips"))
        out.append(f"| {name.replace('_', ' ')} | {cold} | {_f(t.get('compile_s'), '.0f')} | {counts} |")
    return out


def _steps(s: dict, number: int) -> list[str]:
    if "variants" not in s:
        stopped = ", timed out" if s.get("timed_out") else ""
        return ["", f"**{number}. Training steps**: no result (rc {s.get('rc')}{stopped})."]
    pair = " → ".join(s["pair"])
    out = ["", f"**{number}. Training step, {pair}** (batch {s['batch']}, patch {s['patch']}; median of {s['rounds']} "
           f"rounds of {s['block']}-step blocks per source, after a warm-up block; the library's Trainer loop):", "",
           "| configuration | denoise ms | derain ms | synthetic ms | data share | patches/s | × eager fp32 "
           "| peak MiB |", "|---|--:|--:|--:|--:|--:|--:|--:|"]
    variants = s["variants"]
    for variant, r in variants.items():
        if "ms" not in r:
            continue
        base = variants.get(f"{r['method']}_eager_fp32", {}).get("real_ms")
        ms = " | ".join(_f(r["ms"][source], ".1f") for source in ("denoise", "derain", "synthetic"))
        out.append(f"| {variant.replace('_', ' ')} | {ms} | {_pct(r['data_share'])} | "
                   f"{_f(r['patches_per_s'], '.0f')} | {_f(base / r['real_ms'] if base else None)} | "
                   f"{r.get('peak_mib', '–')} |")
    first = next((r for r in variants.values() if r.get("data_path")), None)
    if first:
        lines = "; ".join(f"{k}: {v}" for k, v in first["data_path"].items())
        out += ["", f"Data path (the trainer's own line): {lines}."]
    notes = [f"{k.replace('_', ' ')}: {v}" for k, v in s.get("errors", {}).items()]
    if s.get("skipped"):
        notes.append("not measured for time: " + ", ".join(v.replace("_", " ") for v in s["skipped"]))
    if s.get("timed_out"):
        notes.append("the stage was stopped at its time limit")
    if notes:
        out += ["", "Not measured: " + "; ".join(notes) + "."]
    return out


def _inference(s: dict) -> list[str]:
    if "sizes" not in s:
        return ["", f"**5. Inference**: no result (rc {s.get('rc')})."]
    out = ["", f"**5. Inference** ({' vs '.join(s['pair'])}, one image, interleaved medians; compiled: "
           f"{s['compiler']}):", "", "| size | path | teacher ms | student ms | speed-up | share of the MACs ratio |",
           "|---|---|--:|--:|--:|--:|"]
    for size, r in s["sizes"].items():
        for path, p in r["paths"].items():
            share = 100 * p["speedup"] / r["macs_ratio"]
            out.append(f"| {size}² | {path.replace('_', '-')} | {_f(p['teacher_ms'], '.1f')} | "
                       f"{_f(p['student_ms'], '.1f')} | {_f(p['speedup'])}× | {share:.0f} % |")
        b = r["best"]
        out.append(f"| {size}² | **fastest of each** ({b['teacher_path'].replace('_', '-')} / "
                   f"{b['student_path'].replace('_', '-')}) | {_f(b['teacher_ms'], '.1f')} | "
                   f"{_f(b['student_ms'], '.1f')} | {_f(b['speedup'])}× | {100 * b['share']:.0f} % of "
                   f"{_f(r['macs_ratio'])}× |")
    if s.get("errors"):
        out += ["", "Errors: " + "; ".join(f"{k}: {v}" for k, v in s["errors"].items()) + "."]
    return out


def _compress(c: dict) -> list[str]:
    if "skipped" in c:
        return ["", f"**7. `slkd compress`**: {c['skipped']}."]
    windows = ", ".join(f"{x:.2f}" for x in c["windows_it_per_s"]) or "none"
    return ["", f"**7. `slkd compress`** at full size, stopped after {c['seconds']} s (throughput only; "
            f"random-weight teacher): `{c['command']}`. Started training after {_f(c.get('startup_s'), '.0f')} s; "
            f"{c['steps_done']} steps; logged windows {windows} it/s → "
            f"{_f(c.get('it_per_s'))} it/s, {_f(c.get('step_ms'), '.1f')} ms per step, "
            f"{_f(c.get('patches_per_s'), '.0f')} patches/s (batch {c['batch']}, patch {c['patch']})."]


def _legacy(st: dict) -> list[str]:
    """The timings and teachers stages of the check before it measured the scale (kept so that
    their reports still render)."""
    lines = []
    tm = st.get("timings")
    if tm and "train_step" in tm:
        ts = tm["train_step"]
        lines += ["", f"**Timings** ({tm['pair'][0]} → {tm['pair'][1]}, batch {tm['batch']}, patch "
                  f"{tm['patch']}, median of {tm['runs']} interleaved rounds):", "",
                  "| training step | ms | peak MiB |", "|---|--:|--:|"]
        lines += [f"| {k} | {_f(v, '.1f')} | {ts['peak_mib'].get(k, '–')} |" for k, v in ts["median_ms"].items()]
        d = tm.get("distill_step")
        if d:
            lines += ["", f"SLKD step / floor: {_f(d.get('slkd_over_floor'))}; patches/s: "
                      + ", ".join(f"{k} {_f(v, '.0f')}" for k, v in d["patches_per_s"].items()) + "."]
    te = st.get("teachers")
    if te and te.get("runs"):
        lines += ["", "**Teachers trained on the GPU**:", "", "| run | iterations done / planned | it/s |",
                  "|---|--:|--:|"]
        lines += [f"| {name} | {r['steps_done']} / {r['iters']} | {_f(r.get('it_per_s'), '.1f')} |"
                  for name, r in te["runs"].items()]
    return lines


def update_section(path: Path, text: str) -> None:
    """Replace the GPU check's section of ``path`` (or append it under its heading)."""
    sections.update_section(path, SECTION, text, HEADING)
