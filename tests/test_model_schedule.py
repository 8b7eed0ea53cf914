import pytest
import torch

from magicboost_core.model import schedule as S


def test_check_values_of_reference():
    acp = S.alphas_cumprod()
    assert acp.dtype == torch.float64 and acp.shape == (1000,)
    for t, v in [(0, 0.99915), (1, 0.998296), (81, 0.917138), (500, 0.276333), (981, 0.0057755), (999, 0.0046601)]:
        assert abs(float(acp[t]) - v) < 5e-6 * max(1.0, v) + 5e-7, (t, float(acp[t]), v)


def test_ddim_timesteps():
    ts = S.ddim_timesteps(50)
    assert ts == list(range(981, 0, -20)) and ts[0] == 981 and ts[-1] == 1 and len(ts) == 50
    assert S.ddim_timesteps(50, 0.1) == [81, 61, 41, 21, 1]
    assert S.ddim_timesteps(10) == list(range(901, 0, -100))
    with pytest.raises(ValueError, match="strength"):
        S.ddim_timesteps(50, 0.0)
    with pytest.raises(ValueError, match="no denoising step"):
        S.ddim_timesteps(5, 0.1)
    with pytest.raises(ValueError, match="num_steps"):
        S.ddim_timesteps(0)


def test_previous_alpha_uses_alpha0_for_last_step():
    acp = S.alphas_cumprod()
    assert S.previous_alpha_cumprod(1, 50) == float(acp[0])
    assert S.previous_alpha_cumprod(21, 50) == float(acp[1])
    assert S.previous_alpha_cumprod(981, 50) == float(acp[961])


def test_matches_diffusers_ddim_scheduler():
    sch = S.make_ddim_scheduler()
    sch.set_timesteps(50)
    assert sch.timesteps.tolist() == S.ddim_timesteps(50)
    assert torch.allclose(sch.alphas_cumprod.double(), S.alphas_cumprod(), rtol=1e-6, atol=0)
    assert abs(float(sch.final_alpha_cumprod) - float(S.alphas_cumprod()[0])) < 1e-7
    # One DDIM step (eta 0) equals ours.
    g = torch.Generator().manual_seed(0)
    z, eps = torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    for t in (981, 21, 1):
        ref = sch.step(eps, t, z, eta=0.0).prev_sample
        a, ap = float(S.alphas_cumprod()[t]), S.previous_alpha_cumprod(t, 50)
        x0 = (z - (1 - a) ** 0.5 * eps) / a ** 0.5
        ours = ap ** 0.5 * x0 + (1 - ap) ** 0.5 * eps
        assert torch.allclose(ours, ref, atol=1e-5)


def test_official_buffers_and_q_sample():
    buf = S.official_schedule_buffers()
    assert set(buf) == set(S.SCHEDULE_BUFFER_NAMES)
    assert all(v.shape == (1000,) for v in buf.values())
    assert float(buf["alphas_cumprod_prev"][0]) == 1.0
    z0, n = torch.ones(2, 1), torch.zeros(2, 1)
    out = S.q_sample(z0, torch.tensor([0, 999]), n)
    assert torch.allclose(out.squeeze(1).double(), S.alphas_cumprod()[[0, 999]].sqrt(), atol=1e-7)


def test_seeded_randn_is_deterministic():
    a = S.seeded_randn((3, 4), torch.Generator().manual_seed(5))
    b = S.seeded_randn((3, 4), torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
