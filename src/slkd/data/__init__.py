"""Image files and datasets."""

from slkd.data.image_io import (
    IMAGE_EXTENSIONS,
    LoadedImage,
    list_images,
    read_image,
    write_image,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "LoadedImage",
    "list_images",
    "read_image",
    "write_image",
]
