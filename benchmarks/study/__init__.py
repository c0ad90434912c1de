"""Reproduction study: does SLKD deliver on real benchmarks, and against whom?

Every number comes from ordinary ``slkd train`` / ``slkd distill`` / ``slkd eval`` runs,
launched as subprocesses from configs written to ``<out>/<study>/configs/``:

* ``denoise``      colour Gaussian denoising σ = 25: train CBSD432, test CBSD68 + Kodak24 (RGB).
                   Teacher A and B (restormer-tiny), student res-sl-tiny by scratch, scratch-long
                   (the iterations SLKD's wall-clock buys, from a side-by-side step timing),
                   output KD, FitNet, AT, FAKD and SLKD, for every seed.
* ``ablations``    SLKD without DRL, without L_NC, without IRL (= without L_ET here), identity
                   extractors, Teacher A in place of Teacher B, on the ``denoise`` setting.
* ``derain``       real rain pairs: train Rain100L/train (84 of the 200 standard training pairs,
                   10 held out for validation), test the complete Rain100L/test (Y channel);
                   teacher, scratch, SLKD.
* ``deblur``       synthetic motion blur on CBSD432 → Levin (RGB); teacher, scratch, SLKD.
* ``realworld``    BRISQUE/PIQE on RealRain20 (inputs and the deraining models' outputs);
                   PSNR/SSIM on the real-noise pairs PolyU100 and CC15 (denoising models).
* ``families``     the other architectures on the ``denoise`` setting, one seed: NAFNet and Uformer
                   tiny pairs (own teachers) and Restormer teachers → NAFNet student.
* ``precision``    ``train.bf16`` (bf16 autocast) against float32: scratch and balanced SLKD on
                   the ``denoise`` setting, the ablations' seeds, CBSD68, paired by seed.
* ``compression``  blocks/widths per level, parameters, MACs and CPU latency at 256×256 of each
                   teacher–student pair (latencies interleaved in one run), PSNR from ``denoise``.

    python -m benchmarks.study denoise ablations --jobs 2 --threads 1
    python -m benchmarks.study all --quick          # what `make bench-quick` runs
    python -m benchmarks.study report               # tables/plots from finished runs only

Runs are reused: a finished run is skipped, an interrupted one resumed, and a run folder holding
other settings is refused (nothing is deleted). Results: ``<results>/reproduce_<study>.json`` and
PNG plots (``benchmarks/results`` for the default study, ``<out>/results`` for any other).

A longer student schedule against the same teachers, a few methods, one seed:

    python -m benchmarks.study denoise --out runs/study-long --teachers-from runs/study \
        --student-iters 2000 --seeds 0 --methods scratch slkd_balanced fitnet_balanced --jobs 2 --threads 1

The package, one concern per module and one vocabulary for this study and the pays study
(:mod:`.pays`): :mod:`.settings` (the design: methods, ablations, weights, the ``Scale`` of the
runs), :mod:`.configs` (the ``Task``: data and tests; schedules; each run's config is built by
:mod:`slkd.engine.runconfigs`, as ``slkd compress`` builds its stages'), :mod:`.plan` (the
``ReproductionStudy``: which jobs, with which configs and dependencies), :mod:`.scheduler` (the
``Study``, its jobs and running them), :mod:`.paired` (seed families and paired
comparisons), :mod:`.summaries` (one summary per study), :mod:`.compression` (the compression
table), :mod:`.report` (Markdown tables and plots) and :mod:`.cli`.
"""
