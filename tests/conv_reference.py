"""Convolution and pooling written straight from their definitions (test references)."""
from __future__ import annotations

import numpy as np


def conv_ref(x, w, stride, padding, groups, b=None):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh = (h + 2 * padding - kh) // stride + 1
    ow = (wd + 2 * padding - kw) // stride + 1
    og = o // groups
    out = np.zeros((n, o, oh, ow))
    for oo in range(o):
        g = oo // og
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, g * cg:(g + 1) * cg, i * stride:i * stride + kh,
                           j * stride:j * stride + kw]
                out[:, oo, i, j] = (patch * w[oo]).sum(axis=(1, 2, 3))
    return out if b is None else out + np.asarray(b).reshape(1, -1, 1, 1)


def pool_ref(x, k, s, fn):
    n, c, h, w = x.shape
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = fn(x[:, :, i * s:i * s + k, j * s:j * s + k], axis=(2, 3))
    return out
