"""The study's report: the Markdown tables of BENCHMARKS.md §9 and the denoising plot, from the
summaries (PSNR in dB)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.study.settings import ABLATIONS, DENOISE_METHODS, LABELS, METHODS, PRECISION, TASK_METHODS


def plot_denoise(summary: dict, path: Path) -> Path | None:
    """PSNR on CBSD68 per method: one dot per seed-mean ± spread, teacher and input as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["table"].get("CBSD68", {})
    names = [m for m in DENOISE_METHODS + tuple(ABLATIONS) if rows.get(m)]
    if not names:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(names)), 4))
    for i, m in enumerate(names):
        p = rows[m]["psnr"]
        ax.errorbar(i, p["mean"], yerr=[[p["mean"] - p["min"]], [p["max"] - p["mean"]]], fmt="o",
                    color="C3" if m == "slkd" else ("C0" if m in METHODS else "C2"), capsize=4)
    if rows.get("teacher_a"):
        ax.axhline(rows["teacher_a"]["psnr"], color="k", ls="--", lw=1, label="Teacher A")
    ax.set_xticks(range(len(names)), [LABELS[m] for m in names], rotation=35, ha="right")
    ax.set_ylabel("CBSD68 PSNR (dB), σ = 25")
    ax.set_title("res-sl-tiny students: mean and min–max over seeds")
    ax.legend(loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path




def _pm(f: dict | None, key: str = "psnr", digits: int = 2) -> str:
    """'mean ± std (min–max)' of a seed family, or a single value, or '–'."""
    if not f:
        return "–"
    v = f[key]
    if isinstance(v, dict):
        if v["n"] == 1:
            return f"{v['mean']:.{digits}f} (1 seed)"
        return f"{v['mean']:.{digits}f} ± {v['std']:.{digits}f} ({v['min']:.{digits}f}–{v['max']:.{digits}f})"
    return f"{v:.{digits}f}"


def paired_text(c: dict | None) -> str:
    """A paired comparison (statistics.paired) as 'mean [per seed]; images better/all; verdict'."""
    if not c:
        return "–"
    seeds = ", ".join(f"{d:+.2f}" for d in c["psnr_diff_per_seed"])
    return f"{c['psnr_diff_mean']:+.2f} [{seeds}]; {c['images_better']}/{c['images']} images; {c['verdict']}"


def _run_label(run: str) -> str:
    """``slkd_balanced_s0`` → "SLKD, balanced λ (…) (seed 0)"; plain names through LABELS."""
    name, _, seed = run.rpartition("_s")
    if name and seed.isdigit():
        return f"{LABELS.get(name, name)} (seed {seed})"
    return LABELS.get(run, run)


def markdown(summaries: dict) -> str:
    """The tables of BENCHMARKS.md §9 from the summaries (PSNR in dB)."""
    from slkd.engine.report import markdown_table

    parts = []
    den = summaries.get("denoise")
    if den:
        sec = den.get("train_seconds_mean", {})
        for data, rows in den["table"].items():
            body = []
            for m, r in rows.items():
                if not r:
                    continue
                is_family = isinstance(r.get("psnr"), dict)
                diff = den["slkd_minus"][data].get(m) if is_family and m != "slkd" else None
                body.append([LABELS.get(m, m), _pm(r), _pm(r, "ssim", 4),
                             paired_text(diff) if diff else ("(reference)" if m == "slkd" else "–"),
                             f"{sec[m]:.0f}" if m in sec else "–"])
            parts.append(f"**{data}** (σ = 25, RGB)\n\n" + markdown_table(
                ["run", "PSNR mean ± std (min–max over seeds)", "SSIM", "SLKD − run: mean [per seed]; "
                 "images where SLKD is better; verdict", "train s"], body, "llllr"))
            for rev, against in den.get("revision_minus", {}).get(data, {}).items():
                lines = [f"- {LABELS[rev]} − {LABELS[m]}: {paired_text(c)}" for m, c in against.items() if c]
                if lines:
                    parts.append("\n".join(lines) + "\n")
        b = den.get("teacher_b")
        if b:
            parts.append(f"Teacher B reconstruction (clean → clean) on {b['count']} {b['dataset']} images: "
                         f"{b['reconstruction_psnr']:.2f} dB.\n")
    for name in ("derain", "deblur"):
        if name in summaries:
            for data, rows in summaries[name]["table"].items():
                body = [[LABELS.get(m, m), _pm(r), _pm(r, "ssim", 4)]
                        for m, r in rows.items() if r and not m.endswith("_minus_scratch")]
                if body:
                    diffs = "".join(f"\n{LABELS[m]} − scratch: {paired_text(rows.get(f'{m}_minus_scratch'))}\n"
                                    for m in TASK_METHODS[1:] if rows.get(f"{m}_minus_scratch"))
                    parts.append(f"**{name}, {data}**\n\n" + markdown_table(["run", "PSNR", "SSIM"], body, "lll")
                                 + diffs)
    real = summaries.get("realworld")
    if real:
        body = [[_run_label(run), f"{r['brisque']:.2f}", f"{r['piqe']:.2f}"]
                for run, r in real["RealRain20_no_reference"].items()]
        if body:
            parts.append("**RealRain20** (no reference; lower is better)\n\n"
                         + markdown_table(["images", "BRISQUE", "PIQE"], body))
        for data, rows in real["real_noise"].items():
            body = [[_run_label(run), _pm(r), _pm(r, "ssim", 4)] for run, r in rows.items() if r]
            if body:
                parts.append(f"**{data}** (real noise, RGB)\n\n" + markdown_table(["run", "PSNR", "SSIM"], body, "lll"))
    fam = summaries.get("families")
    if fam:
        body = []
        for key, rows in fam.items():
            t, st = rows["sizes"][rows["teacher"]], rows["sizes"][rows["student"]]
            red = f"{100 * (1 - st['params'] / t['params']):.1f} % / {100 * (1 - st['macs_256'] / t['macs_256']):.1f} %"
            for data in ("CBSD68", "Kodak24"):
                r = rows[data]
                body.append([f"{rows['teacher']} → {rows['student']}", data, red, _pm(r["teacher_a"]),
                             *(_pm(r.get(m)) for m in TASK_METHODS)])
        parts.append("**Other architectures** (σ = 25, one seed)\n\n" + markdown_table(
            ["teacher → student", "set", "fewer params / MACs", "Teacher A", "scratch", "SLKD",
             "SLKD, balanced λ"], body, "lllllll"))
    prec = summaries.get("precision")
    if prec:
        body = [[LABELS[PRECISION[name]], r["data"], _pm(r["float32"]), _pm(r["bf16"]), paired_text(r["bf16_minus_float32"])]
                for name, r in prec.items() if r["float32"] or r["bf16"]]
        if body:
            parts.append("**Precision: `train.bf16` against float32** (σ = 25)\n\n" + markdown_table(
                ["run", "set", "float32", "bf16", "bf16 − float32: mean [per seed]; images where bf16 is "
                 "better; verdict"], body, "lllll"))
    comp = summaries.get("compression")
    if comp:
        body = []
        for n, r in comp.items():
            v = r.get("vs_teacher")
            body.append([n, "/".join(map(str, r["dim_per_level"])),
                         "/".join(map(str, r["blocks_per_level"])) + f" (+{r['refinement_blocks']})",
                         f"{r['params']:,}", f"{r['macs_256'] / 1e9:.2f} G", f"{r['latency_ms_256']:.0f}",
                         f"{r['psnr_CBSD68']:.2f}" if r.get("psnr_CBSD68") else "–",
                         f"−{100 * v['params_reduction']:.1f} % / −{100 * v['macs_reduction']:.1f} % / "
                         f"{v['speedup']:.2f}× (MACs {v['macs_ratio']:.2f}×)" if v else ""])
        parts.append("**Compression**\n\n" + markdown_table(
            ["model", "width per level", "blocks per level", "params", "MACs @256²", "CPU ms @256²",
             "CBSD68 PSNR", "params / MACs / speed-up"], body, "lllrrrrl"))
    return "\n".join(parts)


def print_summary(summaries: dict, path: Path | None = None) -> None:
    text = markdown(summaries)
    print(text)
    if path is not None:
        path.write_text(text)

