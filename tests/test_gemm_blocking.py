"""A packed GEMM's descriptor (backends/llvm/gemm_blocking.py): what the GEMM code relies on
holds for any sizes (every row, column and depth covered by whole blocks, the scratch and the
team as the fields say), and the symbolic path (RuntimeGemm.descriptor_of, on every new
batch size) gives the descriptor the specialised compile embeds."""
from __future__ import annotations

import random

import pytest

from graphc.backends.llvm import gemm
from graphc.backends.llvm.gemm_blocking import DIRECT_A_MAX_M, BlockingRecipe
from graphc.backends.llvm.gemm_kernels import FIELDS

SIZES = [1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 63, 64, 65, 100, 127, 128, 129, 255, 300, 1000,
         4099]


def _spec(m, n, k, nbatch=0, a_trans=False, alpha=1.0, accumulate=False, sub=None):
    batch = (nbatch,) if nbatch else ()
    bs = (m * k,) if nbatch else ()
    a = gemm._Operand(0, bs, 1 if a_trans else k, m if a_trans else 1, 0)
    b = gemm._Operand(1, (k * n,) if nbatch else (), n, 1, 0)
    c = gemm._Operand(2, (m * n,) if nbatch else (), n, 1, 0)
    return gemm._Spec("float32", batch, m, n, k, a, b, c, alpha, accumulate, sub)


def _fields(desc):
    return dict(zip(FIELDS, desc))


@pytest.mark.parametrize("threads", [1, 2, 4])
@pytest.mark.parametrize("split_depth", [False, True])
def test_blocks_cover_the_product_for_any_sizes(threads, split_depth):
    rng = random.Random(threads * 2 + split_depth)
    p = gemm.PARAMS["float32"]
    for _ in range(300):
        m, n, k = (rng.choice(SIZES) for _ in range(3))
        spec = _spec(m, n, k, nbatch=rng.choice([0, 0, 3]), a_trans=rng.random() < 0.5,
                     alpha=rng.choice([1.0, -0.1]), accumulate=rng.random() < 0.5)
        layouts = gemm._layouts(spec, direct_b=rng.random() < 0.5)
        blk = gemm._blocking(spec, p, threads, layouts, split_depth)
        f = _fields(blk.desc)
        assert len(blk.desc) == len(FIELDS) + 4 * len(spec.batch)
        assert (f["m"], f["n"], f["k"]) == (m, n, k)
        # whole blocks: micro-panel multiples, no larger than the parameters allow
        assert f["mc"] % p.mr == 0 and f["nc"] % p.nr == 0
        assert 0 < f["kc"] <= max(p.kc, p.vl) and (f["kc"] == k or f["kc"] % p.vl == 0)
        # the parts cover every row and column, the depth slices the whole depth
        row_parts = f["parts"] // f["col_parts"]
        assert f["part_rows"] * row_parts >= m and f["part_cols"] * f["col_parts"] >= n
        assert f["ksplit"] * f["k_len"] >= k > (f["ksplit"] - 1) * f["k_len"]
        assert split_depth or f["ksplit"] == 1
        # the team and its scratch as the code reads them
        nb = spec.nbatch
        assert f["units"] == nb * f["parts"] * f["ksplit"]
        assert 1 <= f["threads"] <= threads and f["threads"] <= f["units"]
        assert f["partials"] == f["per_thread"] * f["threads"] == blk.per_thread * blk.threads
        if f["a_direct"]:
            assert m % p.mr == 0 and m <= DIRECT_A_MAX_M and layouts[0] == "rows"
        assert f["bk_size3"] == k and f["bn_size3"] == n
        assert f["accumulate"] == int(spec.accumulate)


def test_implicit_sub_axes_are_padded_in_front():
    sub = (((4, 100), (3, 10), (3, 1)), ((2, 1000), (64, 1)))
    spec = _spec(16, 128, 36, sub=sub)
    layouts = gemm._layouts(spec, direct_b=False)
    f = _fields(gemm._blocking(spec, gemm.PARAMS["float32"], 2, layouts, False).desc)
    assert [f[f"bk_size{i}"] for i in range(4)] == [1, 4, 3, 3]
    assert [f[f"bk_st{i}"] for i in range(4)] == [0, 100, 10, 1]
    assert [f[f"bn_size{i}"] for i in range(4)] == [1, 1, 2, 64]
    assert [f[f"bn_st{i}"] for i in range(4)] == [0, 0, 1000, 1]


def test_the_symbolic_path_gives_the_compiled_descriptor():
    """descriptor_of (flat values, no spec rebuilt) equals _blocking on the spec with those
    sizes, as the specialised compile computes it (depth not split)."""
    rng = random.Random(5)
    for _ in range(200):
        spec = _spec(*(rng.choice(SIZES) for _ in range(3)), nbatch=rng.choice([0, 2]))
        layouts = gemm._layouts(spec, direct_b=False)
        runtime = gemm.RuntimeGemm.restored(spec, 2, layouts)
        want = gemm._blocking(spec, gemm.PARAMS["float32"], 2, layouts, False).desc
        assert runtime.descriptor_of(spec.flat()) == want
        recipe = BlockingRecipe(gemm.PARAMS["float32"], 2, layouts, len(spec.batch),
                                spec.alpha, spec.accumulate, None)
        assert recipe(spec.flat()).desc == want
