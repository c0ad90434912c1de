"""The BENCHMARKS.md section of a GPU check report (``benchmarks/gpu_check.py --markdown``)."""

from __future__ import annotations

from pathlib import Path

from benchmarks import sections

#: the section of BENCHMARKS.md this report owns
SECTION, HEADING = "gpu_check", "## 10. GPU check (one NVIDIA GPU)"


def _f(value, fmt: str = ".2f") -> str:
    return "–" if value is None else format(value, fmt)


def markdown(report: dict) -> str:
    m, st = report["machine"], report["stages"]
    lines = [f"Command: `{report['command']}` at commit `{report.get('commit')}`"
             + (" (**dry run** on the CPU: toy sizes, numbers mean nothing)" if report["dry_run"] else "") + ".",
             f"Machine: {m.get('gpu', 'no GPU')} ({m.get('gpu_memory_gib', '–')} GiB), driver {m.get('driver', '–')}, "
             f"torch {m['torch']}, CUDA {m.get('cuda')}, cuDNN {m.get('cudnn', '–')}, Python {m['python']}, "
             f"{m['cpu_count']} CPU cores; whole check {report.get('seconds', '–')} s.", ""]
    t = st.get("tests")
    if t:
        failed = t.get("failed") or []
        lines.append(f"**1. `pytest -m cuda`** (tests/test_cuda.py): {t.get('passed', '–')} passed, "
                     f"{len(failed)} failed, {t.get('skipped', '–')} skipped, in {t['seconds']} s"
                     + (f"; failed: {', '.join(failed)}" if failed else "") + ".")
    n = st.get("nccl")
    if n:
        lines.append(f"**2. torchrun, 1 process** (`slkd distill`, SLKD, tiny pair): backend `{n.get('backend')}`, "
                     f"stopped at step 2 and resumed → max weight difference to the uninterrupted run "
                     f"{_f(n.get('max_weight_diff'), '.2g')}; {'OK' if n.get('ok') else 'FAILED'}.")
    tm = st.get("timings")
    if tm and "train_step" in tm:
        ts = tm["train_step"]
        lines += ["", f"**3. Timings** ({tm['pair'][0]} → {tm['pair'][1]}, batch {tm['batch']}, patch "
                  f"{tm['patch']}, median of {tm['runs']} interleaved rounds):", "",
                  "| training step | ms | peak MiB |", "|---|--:|--:|"]
        lines += [f"| {k} | {_f(v, '.1f')} | {ts['peak_mib'].get(k, '–')} |" for k, v in ts["median_ms"].items()]
        lines += ["", "Student step speed-up: " + ", ".join(f"{p} {_f(v)}×" for p, v in ts["student_speedup"].items())
                  + "; bf16 speed-up: " + ", ".join(f"{k} {_f(v)}×" for k, v in ts["bf16_speedup"].items()) + "."]
        d = tm.get("distill_step")
        if d:
            lines.append(f"SLKD step / floor (student step + both teacher forwards): {_f(d.get('slkd_over_floor'))}; "
                         "patches/s: " + ", ".join(f"{k} {_f(v, '.0f')}" for k, v in d["patches_per_s"].items())
                         + "; bf16 step speed-up: " + ", ".join(f"{k} {_f(v)}×" for k, v in d.get("bf16_speedup", {}).items()) + ".")
        c = tm.get("distill_step_compiled_losses", {}).get("compile_losses")
        if c:
            lines.append(f"With `distill.compile_losses`: SLKD / floor {_f(c['slkd_compiled_over_floor'])}, "
                         f"{_f(c['speedup_over_eager_slkd'])}× the eager step, first step {_f(c['first_step_s'], '.0f')} s.")
        if tm.get("inference"):
            lines += ["", "| inference | teacher ms | student ms | speed-up | MACs ratio | share | channels_last ms (T / S) | compiled ms (T / S) |",
                      "|---|--:|--:|--:|--:|--:|--:|--:|"]
            compiled = tm.get("inference_compiled", {})
            for size, r in tm["inference"].items():
                cl = r.get("channels_last_ms", {})
                cp = compiled.get(size, {}).get("compiled_ms", {})
                lines.append(f"| {size}² | {_f(r['teacher_ms'], '.1f')} | {_f(r['student_ms'], '.1f')} | {_f(r['speedup'])}× | "
                             f"{_f(r['macs_ratio'])}× | {100 * r['speedup_over_macs_ratio']:.0f} % | "
                             + " / ".join(_f(v, '.1f') for v in cl.values()) + " | "
                             + (" / ".join(_f(v, '.1f') for v in cp.values()) or "–") + " |")
        if tm.get("parity_max_abs_diff"):
            lines.append("")
            lines.append("GPU vs CPU outputs (random weights, 64², max abs difference): " + ", ".join(
                f"{k} {v:.1e}" for k, v in tm["parity_max_abs_diff"].items()) + ".")
    elif tm:
        lines.append(f"**3. Timings**: no result (rc {tm.get('rc')}).")
    te = st.get("teachers")
    if te and te.get("runs"):
        lines += ["", "**4. Teachers trained on the GPU** (batch 64 × 128², bf16 autocast, EMA 0.999; "
                  "validation on each config's held-out split):", "",
                  "| run | iterations done / planned | wall s | it/s | best validation PSNR (step) | file |",
                  "|---|--:|--:|--:|--:|---|"]
        for name, r in te["runs"].items():
            e = r.get("exported") or {}
            lines.append(f"| {name} | {r['steps_done']} / {r['iters']} | {r['seconds']} | {_f(r.get('it_per_s'), '.1f')} | "
                         f"{_f(e.get('val_psnr'))} ({e.get('step', '–')}) | {e.get('file', '–')} |")
    elif te:
        lines.append(f"**4. Teachers**: {te.get('skipped') or te.get('error') or 'no result'}.")
    return "\n".join(lines)


def update_section(path: Path, text: str) -> None:
    """Replace the GPU check's section of ``path`` (or append it under its heading)."""
    sections.update_section(path, SECTION, text, HEADING)
