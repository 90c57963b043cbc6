"""Partition-and-expansion shape/label contract and the mosaic init."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings

from ddcore.errors import RecipeError
from ddcore.types import SynBatch
from ddcore_idm.mosaic import MosaicConfig, MosaicInit, tile_mosaic
from ddcore_idm.partition import PartitionConfig, PartitionExpansion, partition_expand


@given(n=st.integers(1, 6), c=st.integers(1, 3), half=st.integers(1, 6), f=st.integers(1, 3),
       k=st.integers(1, 4), seed=st.integers(0, 99))
@settings(max_examples=40, deadline=None)
def test_partition_contract(n, c, half, f, k, seed):
    size = half * f
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, c, size, size, generator=g)
    labels = torch.randint(0, k, (n,), generator=g)
    aug = PartitionExpansion(PartitionConfig(factor=f), None)
    out = aug.expand(SynBatch(images=images, labels=labels))
    assert out.images.shape == (n * f * f, c, size, size)
    assert torch.equal(out.labels, labels.repeat_interleave(f * f))
    assert torch.equal(out.groups, out.labels)
    # Each output is the bilinear upsampling of one cell: downsampling by area recovers... check the cell mean.
    cells = images.reshape(n, c, f, half, f, half)
    for i in range(n):
        for col in range(f):
            for row in range(f):
                expected_cell = cells[i, :, row, :, col, :]
                got = out.images[i * f * f + col * f + row]
                ref = F.interpolate(expected_cell[None], size=(size, size), mode="bilinear", align_corners=False)[0]
                torch.testing.assert_close(got, ref)


def test_partition_matches_official_quadrants_and_is_differentiable():
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    out = partition_expand(x, 2)
    h = 4
    official = [x[:, :, :h, :h], x[:, :, h:, :h], x[:, :, :h, h:], x[:, :, h:, h:]]  # a, b, c, d
    for q, cell in enumerate(official):
        up = F.interpolate(cell, scale_factor=2, mode="bilinear", align_corners=False)
        torch.testing.assert_close(out[q::4], up)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_partition_rejects_indivisible_size():
    with pytest.raises(RecipeError, match="factor 3"):
        partition_expand(torch.zeros(1, 3, 8, 8), 3)


def test_partition_keeps_soft_targets_aligned():
    syn = SynBatch(images=torch.randn(3, 1, 4, 4), labels=torch.eye(3), targets=torch.randn(3, 5))
    out = PartitionExpansion(PartitionConfig(factor=2), None).expand(syn)
    assert torch.equal(out.labels, torch.eye(3).repeat_interleave(4, 0))
    assert torch.equal(out.targets, syn.targets.repeat_interleave(4, 0))


def test_tile_mosaic_inverts_the_partition_layout():
    cells = torch.randn(3 * 4, 2, 4, 4)
    mosaic = tile_mosaic(cells, 2)
    assert mosaic.shape == (3, 2, 8, 8)
    # Partition without upsampling = the cells back, in the same order.
    back = mosaic.reshape(3, 2, 2, 4, 2, 4).permute(0, 4, 2, 1, 3, 5).reshape(12, 2, 4, 4)
    assert torch.equal(back, cells)


def test_mosaic_init_uses_four_different_real_images_of_the_class(stub_build_nets):
    build = stub_build_nets(3)
    init = MosaicInit(MosaicConfig(), build)
    out = init([2, 2, 2], torch.Generator().manual_seed(0))
    assert out.shape == (6, 3, 8, 8)
    # Every quadrant is a downscaled real image of the right class, and the 4 quadrants are different images.
    train = build.train
    small = F.interpolate(train.normalize(train.images), scale_factor=0.5, mode="bilinear", align_corners=False)
    quads = out.reshape(6, 3, 2, 4, 2, 4).permute(0, 4, 2, 1, 3, 5).reshape(6, 4, 3, 4, 4)
    for i in range(6):
        c = i // 2
        found = []
        for q in range(4):
            match = [(quads[i, q] - small[j]).abs().max() < 1e-5 for j in range(len(small))]
            assert sum(match) == 1
            j = match.index(True)
            assert train.labels[j] == c
            found.append(j)
        assert len(set(found)) == 4
