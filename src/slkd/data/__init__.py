"""Image files and datasets."""

from slkd.data.image_io import (
    IMAGE_EXTENSIONS,
    LoadedImage,
    list_images,
    read_image,
    write_image,
)
from slkd.data.degrade import (
    DEGRADATIONS,
    build_degradation,
    gaussian_noise,
    motion_blur,
    rain_streaks,
    random_motion_kernel,
)
from slkd.data.cache import ImageCache
from slkd.data.datasets import DegradedImageDataset, PairedImageDataset
from slkd.data.sampler import TrainSampler, sample_seed

__all__ = [
    "IMAGE_EXTENSIONS",
    "LoadedImage",
    "list_images",
    "read_image",
    "write_image",
    # degradations
    "DEGRADATIONS",
    "build_degradation",
    "gaussian_noise",
    "motion_blur",
    "rain_streaks",
    "random_motion_kernel",
    # training datasets
    "DegradedImageDataset",
    "ImageCache",
    "PairedImageDataset",
    "TrainSampler",
    "sample_seed",
]
