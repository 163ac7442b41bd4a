"""DCNv3 core: reference vs the official formulation, hand-sized bilinear cases, gradcheck, Triton vs reference."""

import pytest
import torch
import torch.nn.functional as F
from official_dcnv3 import official_dcnv3_core

from m3i.ops import DCNv3Geometry, dcnv3_core, dcnv3_reference, dcnv3_triton, triton_available


def make_inputs(N=2, H=5, W=6, G=2, Cg=3, k=3, stride=1, pad=1, dil=1, rc=0, spread=1.5, dtype=torch.float64,
                seed=0, pad_w=None, device="cpu"):
    """Random input, offsets (std ``spread`` px) and softmax masks for one geometry; returns (tensors, args)."""
    pad_w = pad if pad_w is None else pad_w
    geo = DCNv3Geometry(k, k, stride, stride, pad, pad_w, dil, dil, G, Cg, 1.0, rc, swap_pad=False)
    ho, wo = geo.output_size(H, W)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, H, W, G * Cg, generator=g, dtype=dtype)
    off = spread * torch.randn(N, ho, wo, G * geo.points * 2, generator=g, dtype=dtype)
    m = torch.randn(N, ho, wo, G, geo.points, generator=g, dtype=dtype).softmax(-1).reshape(N, ho, wo, -1)
    return [t.to(device) for t in (x, off, m)]


def args(k=3, stride=1, pad=1, dil=1, G=2, Cg=3, os_=1.0, rc=0, pad_w=None):
    return (k, k, stride, stride, pad, pad if pad_w is None else pad_w, dil, dil, G, Cg, os_, rc)


GEOMETRIES = [  # (k, stride, pad, dilation, offset_scale, remove_center)
    (3, 1, 1, 1, 1.0, 0), (3, 1, 1, 1, 2.0, 0), (3, 2, 1, 1, 1.0, 0), (3, 1, 2, 2, 1.0, 0), (3, 1, 1, 1, 1.0, 1),
    (5, 1, 2, 1, 0.5, 1), (2, 1, 0, 1, 1.0, 0), (1, 1, 0, 1, 1.0, 0),
]


# ---------------------------------------------------------------------------------------- reference
@pytest.mark.parametrize("k,stride,pad,dil,os_,rc", GEOMETRIES)
def test_reference_equals_the_official_formulation(k, stride, pad, dil, os_, rc):
    x, off, m = make_inputs(k=k, stride=stride, pad=pad, dil=dil, rc=rc, H=7, W=6, spread=2.0)
    a = args(k, stride, pad, dil, 2, 3, os_, rc)
    torch.testing.assert_close(dcnv3_reference(x, off, m, *a), official_dcnv3_core(x, off, m, *a), atol=1e-6, rtol=1e-6)


def test_reference_reproduces_the_official_pad_swap_and_the_cuda_convention_differs():
    # pad_h=2, pad_w=0: the official pure-PyTorch reference pads W by 2 and H by 0 (quirk 1)
    x, off, m = make_inputs(H=6, W=7, pad=0, pad_w=2)  # shapes follow the swapped convention (H by 0, W by 2)
    a = args(pad=2, pad_w=0)
    geo_swap = DCNv3Geometry(*a, swap_pad=True)
    ho, wo = geo_swap.output_size(6, 7)
    off, m = off[:, :ho, :wo], m[:, :ho, :wo]
    torch.testing.assert_close(dcnv3_reference(x, off, m, *a), official_dcnv3_core(x, off, m, *a), atol=1e-6, rtol=1e-6)
    assert DCNv3Geometry(*a).output_size(6, 7) != (ho, wo)  # the CUDA convention pads H by 2, W by 0
    with pytest.raises(ValueError, match="offset must be"):
        dcnv3_core(x, off, m, *a)


def test_gradcheck_reference_float64():
    # 1 x 4 x 4 x (2 groups * 2 channels), offsets away from integer positions (bilinear is piecewise smooth)
    x, off, m = make_inputs(N=1, H=4, W=4, G=2, Cg=2, spread=0.3, seed=3)
    off = off + 0.37
    a = args(G=2, Cg=2, os_=1.5)
    inputs = [t.clone().requires_grad_() for t in (x, off, m)]
    assert torch.autograd.gradcheck(lambda *t: dcnv3_reference(*t, *a), inputs, eps=1e-6, atol=1e-6)


def _centre_only(shape_n_h_w, G, P, q):
    n, h, w = shape_n_h_w
    m = torch.zeros(n, h, w, G, P, dtype=torch.float64)
    m[..., q] = 1.0
    return m.reshape(n, h, w, -1)


def test_one_hot_mask_gives_a_shifted_copy_in_x_major_point_order():
    x, _, _ = make_inputs(N=1, H=5, W=6, G=2, Cg=3)
    off = torch.zeros(1, 5, 6, 2 * 9 * 2, dtype=torch.float64)
    padded = F.pad(x.permute(0, 3, 1, 2), (1, 1, 1, 1)).permute(0, 2, 3, 1)  # (1, 7, 8, C)
    for q in range(9):
        i, j = divmod(q, 3)  # i: x index (outer), j: y index (inner)
        out = dcnv3_reference(x, off, _centre_only((1, 5, 6), 2, 9, q), *args())
        torch.testing.assert_close(out, padded[:, j:j + 5, i:i + 6], atol=1e-12, rtol=0)


def test_uniform_mask_without_offsets_is_a_zero_padded_box_filter():
    x, _, _ = make_inputs(N=2, H=5, W=6, G=2, Cg=3)
    off = torch.zeros(2, 5, 6, 2 * 9 * 2, dtype=torch.float64)
    m = torch.full((2, 5, 6, 2 * 9), 1.0 / 9, dtype=torch.float64)
    box = F.avg_pool2d(x.permute(0, 3, 1, 2), 3, 1, 1, count_include_pad=True).permute(0, 2, 3, 1)
    torch.testing.assert_close(dcnv3_reference(x, off, m, *args()), box, atol=1e-12, rtol=0)


def test_integer_offsets_reduce_to_gathering_and_offsets_are_interleaved_x_then_y():
    x, _, _ = make_inputs(N=1, H=6, W=7, G=1, Cg=2)
    off = torch.zeros(1, 6, 7, 9, 2, dtype=torch.float64)
    off[..., 4, 0], off[..., 4, 1] = 2.0, -1.0  # centre point moved by +2 in x, -1 in y
    out = dcnv3_reference(x, off.reshape(1, 6, 7, -1), _centre_only((1, 6, 7), 1, 9, 4), *args(G=1, Cg=2))
    padded = F.pad(x.permute(0, 3, 1, 2), (3, 3, 3, 3)).permute(0, 2, 3, 1)
    torch.testing.assert_close(out, padded[:, 3 - 1:3 - 1 + 6, 3 + 2:3 + 2 + 7], atol=1e-12, rtol=0)


def test_hand_sized_bilinear_values_inside_on_the_border_and_outside():
    # a 2x2 single-channel map [[1, 2], [3, 4]], k=1 (one point at the output pixel), offsets move it
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64).view(1, 2, 2, 1)
    a = args(k=1, pad=0, G=1, Cg=1)
    m = torch.ones(1, 2, 2, 1, dtype=torch.float64)

    def at(dx, dy):  # value sampled by output pixel (0, 0) at (x=dx, y=dy)
        off = torch.zeros(1, 2, 2, 2, dtype=torch.float64)
        off[0, 0, 0] = torch.tensor([dx, dy])
        return dcnv3_reference(x, off, m, *a)[0, 0, 0, 0].item()

    assert at(0.25, 0.5) == pytest.approx(0.5 * (0.75 * 1 + 0.25 * 2) + 0.5 * (0.75 * 3 + 0.25 * 4))  # 2.25
    assert at(1.0, 1.0) == pytest.approx(4.0)
    assert at(-0.5, 0.0) == pytest.approx(0.5 * 1.0)          # half the footprint outside: weight 0.5 on pixel (0, 0)
    assert at(1.5, 1.5) == pytest.approx(0.25 * 4.0)         # a quarter inside
    assert at(-1.0, 0.0) == 0.0 and at(0.0, 2.0) == 0.0        # one pixel outside: zero
    assert at(1e6, -1e6) == 0.0                                # far outside: zero, no overflow


def test_offset_scale_scales_the_kernel_grid_too():
    x, _, _ = make_inputs(N=1, H=6, W=6, G=1, Cg=1)
    off = torch.zeros(1, 6, 6, 18, dtype=torch.float64)
    q = 0  # point (x=-1, y=-1); with offset_scale 2 it reads (x-2, y-2)
    out = dcnv3_reference(x, off, _centre_only((1, 6, 6), 1, 9, q), *args(G=1, Cg=1, os_=2.0))
    padded = F.pad(x.permute(0, 3, 1, 2), (2, 2, 2, 2)).permute(0, 2, 3, 1)
    torch.testing.assert_close(out, padded[:, 0:6, 0:6], atol=1e-12, rtol=0)


def test_remove_center_drops_the_centre_point_and_keeps_masks_as_given():
    geo = DCNv3Geometry(3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1.0, 1)
    assert geo.points == 8
    assert [tuple(p) for p in geo.kernel_points().tolist()] == [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1),
                                                                  (1, -1), (1, 0), (1, 1)]
    x, _, _ = make_inputs(N=1, H=4, W=4, G=1, Cg=1)
    off = torch.zeros(1, 4, 4, 16, dtype=torch.float64)
    m = torch.full((1, 4, 4, 8), 1.0 / 8, dtype=torch.float64)  # not renormalised: 8 neighbours / 8
    nb = F.avg_pool2d(x.permute(0, 3, 1, 2), 3, 1, 1, count_include_pad=True).permute(0, 2, 3, 1) * 9 - x
    torch.testing.assert_close(dcnv3_reference(x, off, m, *args(G=1, Cg=1, rc=1)), nb / 8, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="square kernel of odd size"):
        DCNv3Geometry(2, 2, 1, 1, 0, 0, 1, 1, 1, 1, 1.0, 1)


def test_low_precision_is_computed_in_float32_and_errors_are_clear():
    x, off, m = make_inputs(dtype=torch.float32)
    ref = dcnv3_reference(x, off, m, *args())
    half = dcnv3_reference(x.bfloat16(), off, m, *args())
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), ref, atol=0.05, rtol=0.05)
    with pytest.raises(ValueError, match="group \\* group_channels"):
        dcnv3_reference(x, off, m, *args(G=3))
    with pytest.raises(ValueError, match="mask must be"):
        dcnv3_reference(x, off, m[..., :-1], *args())
    with pytest.raises(ValueError, match="unknown DCNv3 impl 'cuda'; known: auto, reference, triton"):
        dcnv3_core(x, off, m, *args(), impl="cuda")


def test_auto_dispatch_takes_the_reference_for_cpu_tensors():
    x, off, m = make_inputs(dtype=torch.float32)
    assert torch.equal(dcnv3_core(x, off, m, *args()), dcnv3_reference(x, off, m, *args(), swap_pad=False))


# ---------------------------------------------------------------------------------------- Triton
def _compare_triton(x, off, m, a, tol=(2e-5, 1e-4)):
    tr = [t.clone().requires_grad_() for t in (x, off, m)]
    out = dcnv3_triton(*tr, *a)
    assert out.dtype == x.dtype
    go = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.device, out.dtype)
    gt = torch.autograd.grad(out, tr, go)
    rf = [t.detach().float().requires_grad_() for t in (x, off, m)]
    ref = dcnv3_reference(*rf, *a, swap_pad=False)
    gr = torch.autograd.grad(ref, rf, go.float())
    torch.testing.assert_close(out.float(), ref, atol=tol[0], rtol=tol[0])
    for name, a_, b_, t in zip(("input", "offset", "mask"), gt, gr, tr):
        assert a_.dtype == t.dtype
        scale = max(float(b_.abs().max()), 1.0)
        torch.testing.assert_close(a_.float(), b_, atol=tol[1] * scale, rtol=tol[1], msg=lambda s: f"grad_{name}: {s}")


TRITON_CASES = {  # name: (make_inputs kwargs, args kwargs)
    "k3 groups2 Cg3": (dict(), dict()),
    "remove_center": (dict(rc=1), dict(rc=1)),
    "stride2 dil2 pad2 os2": (dict(stride=2, pad=2, dil=2, H=7, W=8), dict(stride=2, pad=2, dil=2, os_=2.0)),
    "k5 one group Cg16": (dict(k=5, pad=2, G=1, Cg=16, H=4, W=5),
                                                                dict(k=5, pad=2, G=1, Cg=16)),
    "asymmetric pads (CUDA convention)": (dict(pad=2, pad_w=0, H=5, W=6), dict(pad=2, pad_w=0)),
}


@pytest.mark.skipif(not triton_available(), reason="needs triton")
@pytest.mark.parametrize("name", list(TRITON_CASES))
def test_triton_matches_the_reference_forward_and_backward(name):
    mk, ak = TRITON_CASES[name]
    a = args(**{"G": mk.get("G", 2), "Cg": mk.get("Cg", 3), **ak})
    _compare_triton(*make_inputs(dtype=torch.float32, **mk), a)


@pytest.mark.skipif(not triton_available(), reason="needs triton")
def test_triton_offsets_far_outside_read_zero_and_have_zero_gradient():
    x, off, m = make_inputs(N=1, H=4, W=5, dtype=torch.float32, seed=4)
    off[0, :2] = 1e6
    off[0, 2:3] = -1e6
    off[0, 3:, :, 0::2] = 4.5  # partly outside on the right
    _compare_triton(x, off, m, args())
    tr = [t.clone().requires_grad_() for t in (x, off, m)]
    out = dcnv3_triton(*tr, *args())
    assert out[0, :3].abs().max() == 0
    gi, go, gm = torch.autograd.grad(out.sum(), tr)
    assert go[0, :3].abs().max() == 0 and gm[0, :3].abs().max() == 0


@pytest.mark.skipif(not triton_available(), reason="needs triton")
@pytest.mark.parametrize("dtype,tol", [(torch.float16, (4e-3, 1e-2)), (torch.bfloat16, (3e-2, 5e-2))])
def test_triton_low_precision_accumulates_in_float32(dtype, tol):
    x, off, m = make_inputs(dtype=torch.float32, G=1, Cg=8, seed=6)
    _compare_triton(x.to(dtype), off.to(dtype), m.to(dtype), args(G=1, Cg=8), tol)


def test_triton_rejects_float64_with_a_clear_error():
    x, off, m = make_inputs()
    with pytest.raises(ValueError, match="use impl='reference' for float64"):
        dcnv3_triton(x, off, m, *args())


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_triton_matches_the_reference_on_cuda_at_internimage_sizes(dtype):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("triton")
    x, off, m = make_inputs(N=2, H=56, W=56, G=4, Cg=16, dtype=torch.float32, spread=2.0, device="cuda")
    tol = {torch.float32: (2e-5, 1e-4), torch.float16: (4e-3, 1e-2), torch.bfloat16: (3e-2, 5e-2)}[dtype]
    _compare_triton(x.to(dtype), off.to(dtype), m.to(dtype), args(G=4, Cg=16), tol)
    assert torch.equal(dcnv3_core(x, off, m, *args(G=4, Cg=16)), dcnv3_triton(x, off, m, *args(G=4, Cg=16)))
