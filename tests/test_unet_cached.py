"""Anchor-cache path == full pass, frame layout and precision checks on a tiny random MultiViewUNet."""
import pytest
import torch

from magicboost_core.model.config import MultiViewUNetConfig
from magicboost_core.model.unet import AnchorCache, MultiViewUNet

H = W = 8


def random_tiny_model(seed: int = 0) -> MultiViewUNet:
    """Tiny UNet with every parameter random (also those that are zero-initialised in training code)."""
    torch.manual_seed(seed)
    model = MultiViewUNet(MultiViewUNetConfig.tiny())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("latents"):
                p.normal_(0.0, 0.5)
            elif p.ndim >= 2:
                p.normal_(0.0, (p.numel() / p.shape[0]) ** -0.5)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.05)
            else:  # norm scales
                p.normal_(1.0, 0.1)
    return model.eval()


def random_inputs(model, b, a, seed=1, per_frame=True, text_len=5, ip_len=6, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    nf = a + 1
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    text = rnd(b, nf, text_len, cfg.context_dim) if per_frame else rnd(b, text_len, cfg.context_dim)
    tokens = rnd(b, nf, ip_len, cfg.ip_in_dim) if per_frame else rnd(b, ip_len, cfg.ip_in_dim)
    labels = torch.zeros(b, nf, 2, dtype=dtype)
    labels[:, 2:] = torch.tensor([500.0, 0.5], dtype=dtype) * torch.rand(b, nf - 2, 1, generator=g).to(dtype)
    return dict(
        sample=rnd(b, cfg.in_channels, H, W),
        timestep=torch.randint(1, 1000, (b,), generator=g),
        anchors=rnd(b, a, cfg.in_channels, H, W),
        text=text, image_tokens=tokens, camera=rnd(b, nf, cfg.camera_dim), labels=labels)


@pytest.fixture(scope="module")
def model():
    return random_tiny_model()


def _err(a, b):
    return (a.double() - b.double()).abs().max().item()


@pytest.mark.parametrize("num_anchors", [4, 6])
def test_cached_equals_full(model, num_anchors):
    inp = random_inputs(model, b=2, a=num_anchors)
    cond = {k: inp[k] for k in ("text", "image_tokens", "camera", "labels")}
    drop = torch.zeros(2, num_anchors - 1)
    drop[0, 1] = 1
    drop[1, -1] = 1
    with torch.no_grad():
        full = model(**inp)
        full_drop = model(**inp, drop_mask=drop)
        cache = model.encode_anchors(inp["anchors"], **cond)
        cached = model(inp["sample"], inp["timestep"], None, **cond, anchor_cache=cache)
        cached_drop = model(inp["sample"], inp["timestep"], None, **cond, drop_mask=drop, anchor_cache=cache)
        # a second target step on the same cache (the SDS / sampling use)
        x2, t2 = torch.randn_like(inp["sample"]), torch.tensor([17, 900])
        full2 = model(x2, t2, inp["anchors"], **cond)
        cached2 = model(x2, t2, None, **cond, anchor_cache=cache)
    assert cached.shape == full.shape == inp["sample"].shape
    assert _err(cached, full) <= 1e-5
    assert _err(cached_drop, full_drop) <= 1e-5
    assert _err(cached2, full2) <= 1e-5
    assert _err(full_drop, full) > 1e-3  # dropping anchors changes the target
    assert cache.num_anchors == num_anchors and cache.batch_size == 2 and tuple(cache.latent_size) == (H, W)
    assert all(not t.requires_grad for t in cache.keys.values())


def test_cached_pass_runs_only_target_rows(model):
    inp = random_inputs(model, b=2, a=4)
    cond = {k: inp[k] for k in ("text", "image_tokens", "camera", "labels")}
    rows = []
    handle = model.unet.conv_in.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    try:
        with torch.no_grad():
            model(**inp)
            cache = model.encode_anchors(inp["anchors"], **cond)
            model(inp["sample"], inp["timestep"], None, **cond, anchor_cache=cache)
    finally:
        handle.remove()
    assert rows == [2 * 5, 2 * 4, 2]


def test_anchor_frames_independent_of_target_and_forward_frames_consistent(model):
    b, a = 2, 4
    nf = a + 1
    inp = random_inputs(model, b=b, a=a)
    cfg = model.config

    def official(x, t):
        rows = lambda v: v.reshape(b * nf, *v.shape[2:])  # noqa: E731
        return model.forward_frames(x, t, rows(inp["text"]), rows(inp["camera"]), rows(inp["image_tokens"]),
                                    inp["anchors"], rows(inp["labels"]))

    x = torch.randn(b * nf, cfg.in_channels, H, W)
    x[0::nf] = inp["sample"]
    t = torch.randint(0, 1000, (b * nf,))
    t[0::nf] = inp["timestep"]
    x_in, t_in = x.clone(), t.clone()
    with torch.no_grad():
        out = official(x, t).reshape(b, nf, cfg.in_channels, H, W)
        x_other = x.clone()
        x_other[0::nf] = torch.randn(b, cfg.in_channels, H, W)
        out_other = official(x_other, t).reshape(b, nf, cfg.in_channels, H, W)
        eps = model(**inp)
    assert torch.equal(x, x_in) and torch.equal(t, t_in)  # inputs untouched
    assert _err(out[:, 0], eps) <= 1e-5  # same computation through both entry points
    assert _err(out[:, 1:], out_other[:, 1:]) == 0.0  # anchors never see the target
    assert _err(out[:, 0], out_other[:, 0]) > 1e-3


def test_shared_conditions_equal_repeated_per_frame(model):
    inp = random_inputs(model, b=2, a=4, per_frame=False)
    nf = 5
    rep = dict(inp, text=inp["text"][:, None].expand(-1, nf, -1, -1),
               image_tokens=inp["image_tokens"][:, None].expand(-1, nf, -1, -1))
    with torch.no_grad():
        assert _err(model(**inp), model(**rep)) <= 1e-5


def test_cache_select_and_cat(model):
    inp = random_inputs(model, b=2, a=4)
    cond = {k: inp[k] for k in ("text", "image_tokens", "camera", "labels")}
    with torch.no_grad():
        cache = model.encode_anchors(inp["anchors"], **cond)
        both = model(inp["sample"], inp["timestep"], None, **cond, anchor_cache=cache)
        swapped = AnchorCache.cat([cache.select([1]), cache.select([0])])
        flip = lambda v: v.flip(0)  # noqa: E731
        out = model(flip(inp["sample"]), flip(inp["timestep"]), None, **{k: flip(v) for k, v in cond.items()},
                    anchor_cache=swapped)
    assert _err(out.flip(0), both) <= 1e-5
    assert cache.nbytes > 0


def test_bfloat16_close_to_float32(model):
    inp = random_inputs(model, b=1, a=4)
    with torch.no_grad():
        ref = model(**inp)
        model_bf16 = random_tiny_model().to(torch.bfloat16)
        inp16 = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in inp.items()}
        out = model_bf16(**inp16)
        cond = {k: inp16[k] for k in ("text", "image_tokens", "camera", "labels")}
        cached = model_bf16(inp16["sample"], inp16["timestep"], None, **cond,
                            anchor_cache=model_bf16.encode_anchors(inp16["anchors"], **cond))
    assert out.dtype == torch.bfloat16
    scale = ref.abs().max().item()
    assert _err(out, ref) <= 0.1 * scale
    assert _err(cached, ref) <= 0.1 * scale


def test_gradients_reach_sample_and_weights(model):
    inp = random_inputs(model, b=1, a=4)
    sample = inp.pop("sample").requires_grad_(True)
    eps = model(sample, **inp)
    eps.square().mean().backward()
    assert sample.grad is not None and sample.grad.abs().sum() > 0
    ip_grad = model.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.processor.to_k_ip.weight.grad
    assert ip_grad is not None and ip_grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
