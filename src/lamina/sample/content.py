"""Synthetic slide pixels: H&E-like tissue, a slide label and a macro photo.

Everything is vectorised numpy: smooth noise is drawn at a low resolution and
upsampled with Pillow, so a 4096x3072 tissue image takes a fraction of a
second. All generators are deterministic for a given seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageCms, ImageDraw, ImageFont

from lamina.sample.identity import LAB_NAME, Identity

BACKGROUND = (240, 240, 240)
"""RGB of the empty glass in the scanned image."""

_EOSIN = np.array([230.0, 150.0, 190.0], dtype=np.float32)
_EOSIN_DARK = np.array([200.0, 105.0, 160.0], dtype=np.float32)
_HAEMATOXYLIN = np.array([90.0, 50.0, 140.0], dtype=np.float32)
_GLASS = (196, 198, 204)
_SLIDE = (226, 228, 232)


def _noise(rng: np.random.Generator, width: int, height: int, cell: int) -> NDArray[np.float32]:
    """Smooth value noise in [0, 1]: random values every ``cell`` pixels, upsampled."""
    grid = rng.random((height // cell + 2, width // cell + 2), dtype=np.float32)
    image = Image.fromarray(grid, mode="F").resize(
        (width, height), Image.Resampling.BICUBIC, box=(0.5, 0.5, width / cell + 0.5, height / cell + 0.5)
    )
    return np.array(image, dtype=np.float32)


def _tissue_field(rng: np.random.Generator, width: int, height: int) -> NDArray[np.float32]:
    """Low-resolution field whose high values are tissue: a few deformed blobs."""
    small_w, small_h = max(8, width // 16), max(8, height // 16)
    ys, xs = np.mgrid[0:small_h, 0:small_w].astype(np.float32)
    xs /= small_w
    ys /= small_h
    field = np.zeros((small_h, small_w), dtype=np.float32)
    for _ in range(int(rng.integers(2, 5))):
        cx, cy = rng.uniform(0.2, 0.8), rng.uniform(0.25, 0.75)
        rx, ry = rng.uniform(0.12, 0.28), rng.uniform(0.12, 0.3)
        field += np.exp(-(((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2))
    field += 0.55 * (_noise(rng, small_w, small_h, 12) - 0.5)
    field += 0.25 * (_noise(rng, small_w, small_h, 3) - 0.5)
    image = Image.fromarray(field, mode="F").resize((width, height), Image.Resampling.BILINEAR)
    return np.array(image, dtype=np.float32)


def tissue_image(width: int, height: int, seed: int = 0) -> NDArray[np.uint8]:
    """Generate an H&E-like whole-slide image.

    The image is a light background with a few irregular tissue fragments:
    pink eosin stroma with a fibrous texture, small dark purple haematoxylin
    nuclei whose density varies across the tissue, a few empty lumens, and a
    fine grain.

    Parameters
    ----------
    width, height : int
        Size of the image in pixels.
    seed : int, optional
        Seed of the random generator.

    Returns
    -------
    numpy.ndarray
        ``(height, width, 3)`` uint8 RGB pixels.
    """
    rng = np.random.default_rng(seed)
    # Work at half resolution, then upsample: scanners' images are that soft anyway.
    work_w, work_h = (width + 1) // 2, (height + 1) // 2
    field = _tissue_field(rng, work_w, work_h)
    lumen = _noise(rng, work_w, work_h, 48)
    alpha = np.clip((field - 0.55) * 12.0, 0.0, 1.0)
    alpha *= np.clip((0.84 - lumen) * 12.0, 0.0, 1.0)
    fibres = _noise(rng, work_w, work_h, 12)
    fibres += 0.6 * _noise(rng, work_w, work_h, 3)
    fibres *= 1.0 / 1.6
    density = _noise(rng, work_w, work_h, 80)
    nuclei = _noise(rng, work_w, work_h, 4)
    nuclei = np.clip((nuclei - 0.86 + 0.12 * density) * 14.0, 0.0, 1.0)
    grain = rng.normal(0.0, 3.0, size=(256, 256)).astype(np.float32)
    grain = np.tile(grain, (work_h // 256 + 1, work_w // 256 + 1))[:work_h, :work_w]
    half = np.empty((work_h, work_w, 3), dtype=np.uint8)
    for channel in range(3):
        stroma = _EOSIN[channel] + (_EOSIN_DARK[channel] - _EOSIN[channel]) * fibres
        tissue = stroma + (_HAEMATOXYLIN[channel] - stroma) * nuclei
        pixel = BACKGROUND[channel] + (tissue - BACKGROUND[channel]) * alpha + grain
        np.clip(pixel, 0, 255, out=pixel)
        half[..., channel] = pixel
    image = Image.fromarray(half).resize((width, height), Image.Resampling.BILINEAR)
    return np.array(image)


def srgb_profile() -> bytes:
    """Return a deterministic sRGB ICC profile (from LittleCMS, via Pillow).

    The profile's creation date is pinned so that files are reproducible.

    Returns
    -------
    bytes
        The ICC profile.
    """
    profile = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    profile[24:36] = bytes.fromhex("07ea000b001c000900000000")  # 2026-11-28 09:00:00
    return bytes(profile)


def pyramid(pixels: NDArray[np.uint8], factor: int, min_size: int) -> list[NDArray[np.uint8]]:
    """Build a pyramid by repeated box-filter reduction.

    Parameters
    ----------
    pixels : numpy.ndarray
        Level 0, ``(height, width, 3)`` uint8.
    factor : int
        Downsampling factor between consecutive levels (2 or 4 usually).
    min_size : int
        Stop once the smaller side of a level is at most ``min_size``.

    Returns
    -------
    list of numpy.ndarray
        Level 0 first; every level is ``factor`` times smaller (floor).
    """
    levels = [pixels]
    image = Image.fromarray(pixels)
    while min(image.size) > min_size and min(image.size) >= factor:
        image = image.reduce(factor)
        levels.append(np.asarray(image))
    return levels


def thumbnail(pixels: NDArray[np.uint8], box: tuple[int, int]) -> NDArray[np.uint8]:
    """Downscale an image to fit in ``box`` (width, height), keeping its aspect.

    Parameters
    ----------
    pixels : numpy.ndarray
        ``(height, width, 3)`` uint8 RGB pixels.
    box : tuple of int
        Maximum ``(width, height)``.

    Returns
    -------
    numpy.ndarray
        The thumbnail pixels.
    """
    height, width = pixels.shape[:2]
    scale = min(box[0] / width, box[1] / height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = Image.fromarray(pixels).resize(size, Image.Resampling.BOX)
    return np.asarray(image)


def _barcode(draw: ImageDraw.ImageDraw, text: str, box: tuple[int, int, int, int]) -> None:
    """Draw a 1-D barcode-like pattern (not a decodable symbology) of ``text``."""
    bits = "1011" + "".join(f"{ord(char) % 64:06b}0" for char in text) + "1101"
    left, top, right, bottom = box
    module = max(1, (right - left) // (len(bits) * 2))
    x = left
    for bit in bits:
        width = module * (2 if bit == "1" else 1)
        draw.rectangle((x, top, x + width - 1, bottom), fill=(0, 0, 0))
        x += width + module


def label_image(identity: Identity, size: tuple[int, int] = (387, 463)) -> Image.Image:
    """Draw a slide label: lab, patient, case, specimen, stain and a barcode.

    Parameters
    ----------
    identity : Identity
        Whose label it is.
    size : tuple of int, optional
        ``(width, height)`` of the label photo, default Aperio's 387x463.

    Returns
    -------
    PIL.Image.Image
        An RGB image, black print on white.
    """
    width, height = size
    image = Image.new("RGB", size, (250, 250, 246))
    draw = ImageDraw.Draw(image)
    lines: Sequence[str] = (
        LAB_NAME,
        identity.patient_name.replace("^", " "),
        identity.accession_number,
        identity.specimen_id,
        identity.stain,
    )
    font_size = max(8, min(height // 14, int(width / 16)))
    y = height // 20
    for number, line in enumerate(lines):
        size_here = font_size if number else max(6, font_size * 2 // 3)
        font = ImageFont.load_default(size=size_here)
        draw.text((width // 20, y), line, fill=(0, 0, 0), font=font)
        y += size_here + size_here // 2
    margin = width // 16
    top = y + height // 20
    bottom = min(height - margin, top + height // 5)
    _barcode(draw, identity.specimen_id, (margin, top, width - margin, bottom))
    return image


def overview_image(
    pixels: NDArray[np.uint8], label: Image.Image, size: tuple[int, int] = (1280, 431)
) -> Image.Image:
    """Photograph of the whole glass slide: label on the left, tissue on the right.

    Parameters
    ----------
    pixels : numpy.ndarray
        The tissue image (any level); it is scaled into the scan area.
    label : PIL.Image.Image
        The label image, pasted into the label area.
    size : tuple of int, optional
        ``(width, height)`` of the macro, default Aperio's 1280x431.

    Returns
    -------
    PIL.Image.Image
        An RGB image.
    """
    width, height = size
    image = Image.new("RGB", size, _GLASS)
    draw = ImageDraw.Draw(image)
    border = max(2, height // 40)
    draw.rectangle((border, border, width - border, height - border), fill=_SLIDE)
    label_w = width * 22 // 75
    fitted = label.copy()
    fitted.thumbnail((label_w - 2 * border, height - 4 * border))
    image.paste(fitted, (2 * border, (height - fitted.height) // 2))
    area = (label_w + 2 * border, 3 * border, width - 3 * border, height - 3 * border)
    tissue = thumbnail(pixels, (area[2] - area[0], area[3] - area[1]))
    darkness = BACKGROUND[1] - tissue.min(axis=2).astype(np.float32)
    mask = Image.fromarray(np.clip(darkness * 8.0, 0, 255).astype(np.uint8), mode="L")
    image.paste(Image.fromarray(tissue), (area[0], area[1]), mask)
    return image


@dataclass(frozen=True)
class SlideContent:
    """Pixels of one synthetic slide.

    Attributes
    ----------
    pixels : numpy.ndarray
        Level 0 tissue, ``(height, width, 3)`` uint8.
    label : PIL.Image.Image
        Label photo.
    overview : PIL.Image.Image
        Macro photo of the whole slide.
    """

    pixels: NDArray[np.uint8]
    label: Image.Image
    overview: Image.Image


def make_slide(
    identity: Identity,
    size: tuple[int, int],
    seed: int,
    label_size: tuple[int, int] = (387, 463),
    overview_size: tuple[int, int] = (1280, 431),
) -> SlideContent:
    """Generate the tissue, label and macro of one slide.

    Parameters
    ----------
    identity : Identity
        Printed on the label.
    size : tuple of int
        ``(width, height)`` of level 0.
    seed : int
        Seed of the tissue generator.
    label_size, overview_size : tuple of int, optional
        ``(width, height)`` of the label and macro images.

    Returns
    -------
    SlideContent
        The slide's pixels.
    """
    pixels = tissue_image(size[0], size[1], seed)
    label = label_image(identity, label_size)
    return SlideContent(pixels, label, overview_image(pixels, label, overview_size))
