"""``slkd demo``: the core library end to end on bundled images, offline, in about a minute.

1. profile the tiny teacher against its student and (without ``--quick``) the official
   Restormer against Res-SL: parameters, MACs at 256×256, latency measured side by side;
2. train the tiny student for colour Gaussian denoising (σ = 25) on three bundled images
   (a short, plain L1 fit — the full training engine and SLKD distillation come later);
3. save its weights, restore the held-out noisy image through the tiled inference path that
   ``slkd restore`` uses, and score input and output with PSNR/SSIM (RGB, uint8 convention).

Everything is written to ``runs/demo/`` with a ``summary.json``.
"""

from __future__ import annotations

import json
import math
import time
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F

from slkd.cli.common import note
from slkd.cli.profile import profile
from slkd.data.folders import add_test_noise
from slkd.data.image_io import read_image, write_image
from slkd.engine.inference import restore
from slkd.errors import SlkdError
from slkd.fileio import atomic_write_bytes
from slkd.metrics import psnr, ssim
from slkd.models import build_model, load_weights, save_weights
from slkd.models.complexity import count_parameters

TRAIN_IMAGES = ("astronaut", "coffee", "rocket")
HELD_OUT = "chelsea"
SIGMA = 25.0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="run the library end to end on bundled images",
                              description=__doc__, formatter_class=_raw())
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--quick", action="store_true", help="fewer iterations and timing runs")
    p.add_argument("--iters", type=int, default=None, help="training iterations (default 400, quick 100)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def _raw():
    import argparse

    return argparse.RawDescriptionHelpFormatter


def bundled_image(name: str) -> torch.Tensor:
    with resources.as_file(resources.files("slkd.assets") / f"{name}.png") as path:
        return read_image(path).tensor


def _patches(images: list[torch.Tensor], batch: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Random crops with random flips, drawn uniformly over the images."""
    crops = []
    for _ in range(batch):
        img = images[int(torch.randint(len(images), (1,), generator=gen))]
        _, h, w = img.shape
        top = int(torch.randint(h - size + 1, (1,), generator=gen))
        left = int(torch.randint(w - size + 1, (1,), generator=gen))
        crop = img[:, top:top + size, left:left + size]
        if torch.rand(1, generator=gen) < 0.5:
            crop = crop.flip(-1)
        crops.append(crop)
    return torch.stack(crops)


def fit_denoiser(model, images, *, iters: int, seed: int, batch: int = 8, size: int = 64,
                 lr: float = 2e-3) -> list[float]:
    """Plain L1 training on noisy patches (σ = 25), Adam with cosine decay; returns losses."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iters, eta_min=lr * 0.01)
    model.train()
    losses = []
    start = time.perf_counter()
    for it in range(1, iters + 1):
        clean = _patches(images, batch, size, gen)
        noisy = clean + torch.randn(clean.shape, generator=gen) * (SIGMA / 255.0)
        loss = F.l1_loss(model(noisy), clean)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if it % max(1, iters // 10) == 0 or it == iters:
            rate = it / (time.perf_counter() - start)
            note(f"  iter {it:>4}/{iters}  L1 {sum(losses[-20:]) / len(losses[-20:]):.4f}  "
                 f"lr {sched.get_last_lr()[0]:.2e}  {rate:.1f} it/s  ETA {(iters - it) / rate:.0f} s")
    return losses


def run(args) -> int:
    out = Path(args.out)
    iters = args.iters or (100 if args.quick else 400)
    if iters < 1:
        raise SlkdError("--iters must be >= 1")
    runs = 3 if args.quick else 5
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()

    # --quick times the tiny pair only: the full Restormer needs ~10 s per pass on a 2-core CPU
    pairs = [("restormer-tiny", "res-sl-tiny")] + ([] if args.quick else [("restormer", "res-sl")])
    note(f"1/3 profiling {' and '.join(f'{a}/{b}' for a, b in pairs)} at 256×256")
    reports = {
        student: profile([teacher, student], (256, 256), runs=runs, warmup=1, threads=None,
                         device=torch.device("cpu"), latency=True)
        for teacher, student in pairs
    }
    for rep in reports.values():
        c = rep["comparison"]
        note(f"  {c['candidate']} vs {c['reference']}: {100 * c['params_reduction']:.1f}% fewer params, "
             f"{100 * c['macs_reduction']:.1f}% fewer MACs, {c['speedup']:.2f}× faster")

    note(f"2/3 training res-sl-tiny for σ={SIGMA:g} denoising on {', '.join(TRAIN_IMAGES)} ({iters} iterations)")
    student = build_model("res-sl-tiny")
    start = time.perf_counter()
    losses = fit_denoiser(student, [bundled_image(n) for n in TRAIN_IMAGES], iters=iters, seed=args.seed)
    train_s = time.perf_counter() - start
    weights = save_weights(student, out / "res-sl-tiny-denoise25.pth")

    note(f"3/3 restoring held-out '{HELD_OUT}' with σ={SIGMA:g} noise (tiled, from the saved weights)")
    deployed = build_model("res-sl-tiny")
    load_weights(deployed, weights)
    clean = bundled_image(HELD_OUT)
    noisy = add_test_noise(clean, SIGMA, seed=0)
    restored = restore(deployed, noisy[None], tile=128, overlap=16)[0]
    write_image(out / "noisy" / f"{HELD_OUT}.png", noisy)
    write_image(out / "restored" / f"{HELD_OUT}.png", restored)
    scores = {
        name: {"psnr": float(psnr(img, clean)), "ssim": float(ssim(img, clean))}
        for name, img in (("noisy_input", noisy), ("res-sl-tiny", restored))
    }
    summary = {
        "profile_256": reports,
        "training": {"model": "res-sl-tiny", "params": count_parameters(student), "iters": iters,
                     "sigma": SIGMA, "train_images": list(TRAIN_IMAGES), "seconds": train_s,
                     "first_loss": losses[0], "final_loss": sum(losses[-20:]) / len(losses[-20:])},
        "held_out": {"image": HELD_OUT, "convention": "RGB PSNR/SSIM, uint8-quantised", **scores},
        "weights": str(weights),
        "seconds": time.perf_counter() - t0,
    }
    if not all(math.isfinite(v["psnr"]) for v in scores.values()):
        raise SlkdError("demo produced a non-finite PSNR; this is a bug, please report it")
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
    gain = scores["res-sl-tiny"]["psnr"] - scores["noisy_input"]["psnr"]
    print(f"held-out '{HELD_OUT}', σ={SIGMA:g}: noisy {scores['noisy_input']['psnr']:.2f} dB → "
          f"res-sl-tiny {scores['res-sl-tiny']['psnr']:.2f} dB ({gain:+.2f} dB, SSIM "
          f"{scores['noisy_input']['ssim']:.3f} → {scores['res-sl-tiny']['ssim']:.3f}); "
          f"results in {out}/summary.json ({summary['seconds']:.0f} s)")
    return 0
