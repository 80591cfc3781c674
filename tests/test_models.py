"""The models are the published CMGAN networks: exact sizes, official key layout, reference outputs."""

from __future__ import annotations

import pytest
import torch

from cmgan_lib.models import Discriminator, TSCNet, count_parameters
from cmgan_lib.models.conformer import Attention


def test_parameter_counts_match_the_paper():
    assert count_parameters(TSCNet(num_channel=64, num_features=201)) == 1_834_833
    assert count_parameters(Discriminator(ndf=16)) == 181_650


@pytest.fixture(scope="module")
def gen_ref(reference_dir):
    return torch.load(reference_dir / "generator_reference.pt", weights_only=False)


@pytest.fixture(scope="module")
def disc_ref(reference_dir):
    return torch.load(reference_dir / "discriminator_reference.pt", weights_only=False)


def test_generator_state_dict_layout_is_official(gen_ref):
    ours = {k: tuple(v.shape) for k, v in TSCNet(**gen_ref["config"]).state_dict().items()}
    official = {k: tuple(v.shape) for k, v in gen_ref["state_dict"].items()}
    assert ours == official


def test_discriminator_state_dict_layout_is_official(disc_ref):
    ours = {k: tuple(v.shape) for k, v in Discriminator(**disc_ref["config"]).state_dict().items()}
    official = {k: tuple(v.shape) for k, v in disc_ref["state_dict"].items()}
    assert ours == official


def test_generator_reproduces_official_outputs(gen_ref):
    model = TSCNet(**gen_ref["config"])
    model.load_state_dict(gen_ref["state_dict"], strict=True)
    model.eval()
    with torch.no_grad():
        real, imag = model(gen_ref["input"])
    assert real.shape == gen_ref["output_real"].shape
    assert (real - gen_ref["output_real"]).abs().max().item() <= 1e-5
    assert (imag - gen_ref["output_imag"]).abs().max().item() <= 1e-5


def test_discriminator_reproduces_official_outputs(disc_ref):
    model = Discriminator(**disc_ref["config"])
    model.load_state_dict(disc_ref["state_dict"], strict=True)
    model.eval()
    with torch.no_grad():
        out = model(disc_ref["input_x"], disc_ref["input_y"])
    assert out.shape == disc_ref["output"].shape
    assert (out - disc_ref["output"]).abs().max().item() <= 1e-5


def _naive_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """Shaw relative attention written out literally: an (N, N, d) embedding per position pair."""
    b, n, _ = x.shape
    h, d, m = attn.heads, attn.dim_head, attn.max_pos_emb
    q = attn.to_q(x).view(b, n, h, d).transpose(1, 2)
    k, v = (t.view(b, n, h, d).transpose(1, 2) for t in attn.to_kv(x).chunk(2, dim=-1))
    dots = torch.einsum("bhid,bhjd->bhij", q, k) * attn.scale
    seq = torch.arange(n)
    dist = (seq[:, None] - seq[None, :]).clamp(-m, m) + m
    rel = attn.rel_pos_emb(dist)
    dots = dots + torch.einsum("bhnd,nrd->bhnr", q, rel) * attn.scale
    out = torch.einsum("bhij,bhjd->bhid", dots.softmax(-1), v)
    return attn.to_out(out.transpose(1, 2).reshape(b, n, h * d))


@pytest.mark.parametrize("n, max_pos", [(7, 512), (13, 4)])  # the second clamps offsets beyond +-4
def test_fast_relative_attention_equals_literal_formula(n, max_pos):
    torch.manual_seed(0)
    attn = Attention(dim=16, heads=4, dim_head=4, max_pos_emb=max_pos).eval()
    x = torch.randn(3, n, 16)
    with torch.no_grad():
        assert torch.allclose(attn(x), _naive_attention(attn, x), atol=1e-6)


# the CPU path, its fallback under autocast or mixed dtypes, the other devices' path
@pytest.mark.parametrize("path", ["_attend_cpu", "_attend_gathered", "_attend_strided"])
@pytest.mark.parametrize("n, max_pos, dim_head", [(9, 512, 2), (13, 4, 4)])
def test_both_attention_paths_equal_the_literal_formula_values_and_gradients(path, n, max_pos, dim_head):
    torch.manual_seed(0)
    attn = Attention(dim=8, heads=8 // dim_head, dim_head=dim_head, max_pos_emb=max_pos).double().eval()
    x = torch.randn(3, n, 8, dtype=torch.double, requires_grad=True)
    b, h, d = 3, attn.heads, dim_head

    def fast(x):
        q = attn.to_q(x).view(b, n, h, d).transpose(1, 2)
        k, v = (t.view(b, n, h, d).transpose(1, 2) for t in attn.to_kv(x).chunk(2, dim=-1))
        if path in ("_attend_cpu", "_attend_gathered"):
            out = getattr(attn, path)(*(t.reshape(b * h, n, d) for t in (q, k, v))).view(b, h, n, d)
        else:
            out = attn._attend_strided(q, k, v)
        return attn.to_out(out.transpose(1, 2).reshape(b, n, h * d))

    params = [x, *attn.parameters()]
    y_fast, y_ref = fast(x), _naive_attention(attn, x)
    g_fast = torch.autograd.grad(y_fast.square().sum(), params)
    g_ref = torch.autograd.grad(y_ref.square().sum(), params)
    assert (y_fast - y_ref).abs().max() < 1e-12
    for a, r in zip(g_fast, g_ref, strict=True):
        assert (a - r).abs().max() < 1e-10


def test_cpu_attention_falls_back_under_autocast():
    """Under bf16 autocast the hand-written backward would mix dtypes: the autograd path runs instead."""
    torch.manual_seed(0)
    attn = Attention(dim=8, heads=4, dim_head=2)
    x = torch.randn(2, 9, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = attn(x)
    y.float().sum().backward()
    assert y.dtype == torch.bfloat16 and x.grad is not None and torch.isfinite(x.grad).all()


def test_small_generator_trains_and_keeps_shapes():
    torch.manual_seed(0)
    model = TSCNet(num_channel=8, num_features=201)
    x = torch.randn(2, 2, 21, 201)
    real, imag = model(x)
    assert real.shape == imag.shape == (2, 1, 21, 201)
    (real.square().mean() + imag.square().mean()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_fewer_tscbs_keep_the_published_names_order_and_initial_weights_and_load_back():
    """num_tscb (the tests' 1-block runs): TSCB_1..TSCB_k of the published layout, built in the published order
    (so a seed gives the published initial weights up to block k), and load_generator reads k from the names."""
    from cmgan_lib.scoring.enhance import load_generator

    torch.manual_seed(0)
    full = TSCNet(num_channel=4).state_dict()
    torch.manual_seed(0)
    two = TSCNet(num_channel=4, num_tscb=2)
    assert list(two.state_dict()) == [k for k in full if not k.startswith(("TSCB_3.", "TSCB_4."))]
    for k, v in two.state_dict().items():
        if k.startswith(("dense_encoder.", "TSCB_1.", "TSCB_2.")):
            assert torch.equal(v, full[k]), k
    loaded = load_generator(two.state_dict())
    assert loaded.num_tscb == 2
    x = torch.randn(1, 2, 11, 201)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(loaded(x), two.eval()(x), strict=True))
    with pytest.raises(ValueError, match="num_tscb must be >= 1"):
        TSCNet(num_channel=4, num_tscb=0)


def test_global_max_pool_is_adaptive_max_pool_values_and_gradients():
    """The discriminator's pool (deterministic-safe on CUDA) routes gradients like AdaptiveMaxPool2d(1)."""
    from cmgan_lib.models.discriminator import GlobalMaxPool

    torch.manual_seed(0)
    for x in (torch.randn(3, 8, 5, 7), torch.randn(2, 4, 6, 6).round()):  # the second has ties
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = torch.nn.AdaptiveMaxPool2d(1)(a), GlobalMaxPool()(b)
        g = torch.randn_like(ya)
        ya.backward(g)
        yb.backward(g)
        assert torch.equal(ya, yb) and torch.equal(a.grad, b.grad)


@pytest.mark.parametrize("kernel", [31, 4])  # odd and even kernels ("same" padding either way)
def test_fused_conformer_pieces_equal_the_official_formulas_values_and_gradients(kernel):
    """Swish (F.silu) and GLU (F.glu): same function as the official x * x.sigmoid() and
    chunk-sigmoid-multiply inside the convolution module, forward and backward."""
    import torch.nn.functional as F

    from cmgan_lib.models.conformer import GLU, ConformerConvModule, Swish

    torch.manual_seed(0)
    module = ConformerConvModule(16, kernel_size=kernel).train()
    _, _, pw_in, _, dw, bn, _, pw_out, _, _ = module.net

    def official(x):
        y = pw_in(module.net[0](x).transpose(1, 2))
        out, gate = y.chunk(2, dim=1)
        y = dw.conv(F.pad(out * gate.sigmoid(), dw.padding))
        y = bn(y)
        return pw_out(y * y.sigmoid()).transpose(1, 2)

    x = torch.randn(3, 37, 16)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours, ref = module(a), official(b)
    assert ours.shape == ref.shape == x.shape
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    (ours * torch.linspace(-1, 1, 16)).sum().backward()
    grads = [p.grad.clone() for p in module.parameters()]
    module.zero_grad()
    (ref * torch.linspace(-1, 1, 16)).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-5)
    # parameter gradients sum over every position; the depthwise bias's is zero up to rounding (BatchNorm
    # follows), so the tolerance is relative to the largest gradient
    scale = max(p.grad.abs().max().item() for p in module.parameters())
    for g, p in zip(grads, module.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, rtol=0, atol=1e-5 * scale)
    assert torch.equal(Swish()(x), F.silu(x)) and GLU(dim=-1)(x).shape == (3, 37, 8)
