"""Segmentation outlines (lamina.annotations.foreign.outlines) and the ELLIPSE polygon."""

from __future__ import annotations

import numpy as np

from lamina.annotations.ann import ellipse
from lamina.annotations.foreign import outlines


def test_a_mask_is_outlined_with_its_hole() -> None:
    grid = np.zeros((6, 6), dtype=bool)
    grid[1:4, 1:5] = True
    grid[2, 2] = False
    rings = sorted(sorted(map(tuple, ring.tolist())) for ring in outlines(grid))
    assert rings == [[(1, 1), (1, 4), (5, 1), (5, 4)], [(2, 2), (2, 3), (3, 2), (3, 3)]]


def test_two_regions_are_two_outlines_and_an_l_keeps_its_corners() -> None:
    grid = np.zeros((5, 5), dtype=bool)
    grid[0, 0] = True
    grid[2:5, 2] = True
    grid[4, 2:5] = True
    rings = outlines(grid)
    assert sorted(len(ring) for ring in rings) == [4, 6]


def test_an_ellipse_passes_through_its_axes_ends() -> None:
    ring = ellipse(np.array([[0.0, 5.0], [10.0, 5.0], [5.0, 3.0], [5.0, 7.0]]), sides=4)
    assert np.allclose(ring, [[10, 5], [5, 7], [0, 5], [5, 3]])
