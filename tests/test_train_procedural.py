import torch

from magicboost_core.train.dataset import DataConfig, MultiViewData, build_cache, load_data, render_object
from magicboost_core.train.procedural import PATTERNS, ProceduralConfig, make_object, pattern_colors


SMALL = DataConfig(num_objects=3, targets_per_object=2, render_size=32, image_size=16, shard_size=2,
                   perturbed_anchors=True)


def test_make_object_is_deterministic_and_fits():
    a, b, c = make_object(5), make_object(5), make_object(6)
    assert torch.equal(a.vertices, b.vertices) and torch.equal(a.faces, b.faces)
    assert torch.equal(a.vertex_colors, b.vertex_colors)
    assert a.vertices.shape != c.vertices.shape or not torch.equal(a.vertices, c.vertices)
    for m in (a, c):
        r = m.vertices.norm(dim=-1).max()
        assert r <= ProceduralConfig().fit_radius + 1e-5
        assert m.vertex_colors.min() >= 0 and m.vertex_colors.max() <= 1


def test_patterns_in_range_and_unknown_pattern_errors():
    pts = torch.rand(50, 3) * 2 - 1
    for p in PATTERNS:
        c = pattern_colors(pts, p, torch.Generator().manual_seed(0))
        assert c.shape == (50, 3) and c.min() >= 0 and c.max() <= 1
    try:
        pattern_colors(pts, "plaid", torch.Generator())
    except ValueError as e:
        assert "plaid" in str(e)
    else:
        raise AssertionError("unknown pattern accepted")


def test_render_object_is_deterministic():
    a, b = render_object(11, SMALL), render_object(11, SMALL)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert a["anchors"].shape == (4, 16, 16, 3) and a["anchors"].dtype == torch.uint8
    assert a["targets"].shape == (2, 16, 16, 3)
    assert a["anchors_perturbed"].shape == (4, 16, 16, 3)
    assert torch.equal(a["anchors_perturbed"][0], a["anchors"][0])  # the reference view is exact
    assert (a["target_azimuth"] >= -180).all() and (a["target_azimuth"] < 180).all()
    assert (a["target_elevation"] >= -10).all() and (a["target_elevation"] <= 30).all()
    assert int(a["anchors"][0][0, 0].min()) == 255  # white background in the corner
    assert a["anchors"].float().std() > 5  # something was drawn


def test_cache_round_trip(tmp_path):
    folder = build_cache(SMALL, tmp_path, progress=False)
    assert len(list(folder.glob("shard-*.safetensors"))) == 2
    data = load_data(SMALL, tmp_path, progress=False)
    assert isinstance(data, MultiViewData) and len(data) == 3
    ref = render_object(SMALL.first_seed + 2, SMALL)
    assert torch.equal(data.anchors[2], ref["anchors"]) and torch.equal(data.targets[2], ref["targets"])
    b = data.batch(torch.tensor([0, 2]), torch.tensor([1, 0]))
    assert b["anchors"].shape == (2, 4, 3, 16, 16) and b["target"].shape == (2, 3, 16, 16)
    assert 0 <= float(b["anchors"].min()) and float(b["anchors"].max()) <= 1


def test_cache_built_by_worker_processes_is_the_same(tmp_path):
    one = build_cache(SMALL, tmp_path / "one", progress=False)
    two = build_cache(SMALL, tmp_path / "two", progress=False, workers=2)
    names = sorted(p.name for p in one.glob("shard-*.safetensors"))
    assert names == sorted(p.name for p in two.glob("shard-*.safetensors")) and len(names) == 2
    assert all((one / n).read_bytes() == (two / n).read_bytes() for n in names)
    assert not list(two.glob("*.tmp"))


def test_data_config_errors():
    for kw in ({"num_objects": 0}, {"render_size": 50, "image_size": 32}):
        try:
            DataConfig(**kw)
        except ValueError:
            pass
        else:
            raise AssertionError(kw)
