"""HCMoCo's encoders (models/hcmoco.py) and PointNet++ (models/pointnet2.py): timm HRNet feature layout, the
segmentation-HRNet forward, official checkpoint key layout, SemGCN against a loop reference, the PointNet++
operators against plain-loop references, point clouds from depth (CPU, tiny sizes)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from humanvision.errors import ConfigError, DataError
from humanvision.models import create_model, list_models
from humanvision.models import hcmoco as H
from humanvision.models import pointnet2 as P

torch.set_num_threads(1)


# ============================================================================================= timm HRNet layout
def test_timm_hrnet_feature_location_empty_gives_the_four_hrnetv2_branches():
    """The finding documented in models/hcmoco.py: feature_location='' (indices 1-4) are HRNetV2's branches;
    the default 'incre' runs the classification head's incre modules (128-1024 channels)."""
    with torch.device("meta"):
        plain = timm.create_model("hrnet_w18", pretrained=False, features_only=True, feature_location="")
        incre = timm.create_model("hrnet_w18", pretrained=False, features_only=True)
        assert plain.feature_info.channels() == [64, 18, 36, 72, 144]
        assert plain.feature_info.reduction() == [2, 4, 8, 16, 32]
        assert incre.feature_info.channels() == [64, 128, 256, 512, 1024]
        assert not any(k.startswith("incre_modules") for k in plain.state_dict())
        outs = plain(torch.empty(2, 3, 320, 320))
    assert [tuple(o.shape) for o in outs[1:]] == [(2, 18, 80, 80), (2, 36, 40, 40), (2, 72, 20, 20),
                                                  (2, 144, 10, 10)]


def test_full_size_encoders_on_meta_device():
    with torch.device("meta"):
        w18 = create_model("hcmoco_hrnet_w18", skeleton="mpii16")
        w32 = H.HRNetEncoder("hrnet_w32")
        feats = w18.encoder1(torch.empty(2, 3, 320, 320))
        out = w18(torch.empty(2, 3, 320, 320), torch.empty(2, 3, 320, 320), torch.empty(2, 16, 2))
    assert [tuple(f.shape) for f in feats] == [(2, 18, 80, 80), (2, 36, 40, 40), (2, 72, 20, 20), (2, 144, 10, 10)]
    assert w18.encoder1.num_features == 270 and w18.head1[0].weight.shape == (128, 270)
    assert w32.channels == (32, 64, 128, 256) and w32.reductions == (4, 8, 16, 32) and w32.num_features == 480
    assert w18.encoder1_linear.weight.shape == (128, 270, 1, 1) and w18.encoder1_linear.bias is not None
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "f_rgb": (2, 128), "f_depth": (2, 128), "f_kp": (2, 128), "kp": (2, 16, 128),
        "dense_rgb": (2, 128, 80, 80), "dense_depth": (2, 128, 80, 80)}
    trunk = sum(p.numel() for p in w18.encoder1.parameters()) / 1e6
    assert 9.4 < trunk < 9.7, trunk  # HRNetV2-W18 backbone without the classification head: 9.56 M
    assert w18.num_joints == 16 and w18.model_name == "hcmoco_hrnet_w18"
    bns = [m for m in w18.encoder2.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.01 for m in bns)


def _tiny_encoder(**kw) -> H.HRNetEncoder:
    torch.manual_seed(0)
    return H.HRNetEncoder("hrnet_w18", hrnet_args=H.TINY_HRNET, **kw)


def test_encoder_forward_equals_timm_with_nearest_fusion_and_keys_match():
    enc = _tiny_encoder(fuse_upsample="nearest", init="timm").eval()
    ref = timm.create_model("hrnet_w18", pretrained=False, features_only=True, feature_location="",
                            out_indices=(1, 2, 3, 4), **H.TINY_HRNET).eval()
    ref.load_state_dict(enc.state_dict(), strict=True)  # same keys, same shapes
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = enc(x), ref(x)
    assert len(ours) == 4 and all(torch.equal(a, b) for a, b in zip(ours, theirs))
    enc.fuse_upsample = "bilinear"
    with torch.no_grad():
        bil = enc(x)
    assert not torch.allclose(bil[0], ours[0])


def test_bilinear_fusion_accepts_sizes_not_multiple_of_32():
    enc = _tiny_encoder().eval()
    with torch.no_grad():
        feats = enc(torch.randn(1, 3, 72, 80))  # 18x20, 9x10, 5x5, 3x3
    assert [tuple(f.shape[-2:]) for f in feats] == [(18, 20), (9, 10), (5, 5), (3, 3)]
    merged = H.HRNetEncoder.merge(feats)
    assert merged.shape == (1, 120, 18, 20)
    assert torch.equal(merged[:, :8], feats[0])
    assert torch.allclose(merged[:, 8:24], F.interpolate(feats[1], size=(18, 20), mode="bilinear",
                                                         align_corners=False))


def test_load_pretrained_classification_hrnet_drops_its_head():
    cls = timm.create_model("hrnet_w18", pretrained=False, **H.TINY_HRNET)  # ImageNet-style: incre + classifier
    enc = _tiny_encoder()
    dropped = enc.load_pretrained(cls.state_dict(), source="imagenet.pth")
    assert dropped and all(k.startswith(("incre_modules", "downsamp_modules", "final_layer", "classifier"))
                           for k in dropped)
    assert torch.equal(enc.stage4[1].branches[3][0].conv2.weight, cls.stage4[1].branches[3][0].conv2.weight)
    sd = cls.state_dict()
    sd["conv1.weight"] = torch.zeros(16, 1, 3, 3)
    with pytest.raises(DataError, match="imagenet.pth.*conv1.weight"):
        enc.load_pretrained(sd, source="imagenet.pth")
    with pytest.raises(DataError, match="missing"):
        enc.load_pretrained({"conv1.weight": torch.zeros(16, 3, 3, 3)})


def test_official_init_and_bn_momentum():
    enc = _tiny_encoder()
    convs = [m.weight for m in enc.modules() if isinstance(m, torch.nn.Conv2d)]
    w = torch.cat([c.flatten() for c in convs])
    assert 0.0008 < w.std().item() < 0.0012  # N(0, 0.001)
    assert all(m.momentum == 0.01 and torch.all(m.weight == 1) for m in enc.modules()
               if isinstance(m, torch.nn.BatchNorm2d))
    with pytest.raises(ConfigError, match="fuse_upsample"):
        H.HRNetEncoder("hrnet_w18", hrnet_args=H.TINY_HRNET, fuse_upsample="bicubic")


# ================================================================== official checkpoint layout (fixture from names)
def _bn(prefix: str, c: int) -> dict[str, tuple]:
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def official_hrnet_keys(cfg: dict, in_chans: int = 3) -> dict[str, tuple]:
    """Key -> shape of the official HRNet (HRNet-Semantic-Segmentation naming, A.6), written from the
    architecture rules, independently of timm: stem, layer1 bottlenecks, transitions, stages of
    HighResolutionModules (branches of BasicBlocks, fuse layers), every module multi-scale."""
    keys: dict[str, tuple] = {}
    stem = cfg["stem_width"]
    keys["conv1.weight"] = (stem, in_chans, 3, 3)
    keys.update(_bn("bn1", stem))
    keys["conv2.weight"] = (64, stem, 3, 3)
    keys.update(_bn("bn2", 64))
    c1, inp = cfg["stage1"]["num_channels"][0], 64
    for b in range(cfg["stage1"]["num_blocks"][0]):
        p = f"layer1.{b}"
        keys[f"{p}.conv1.weight"] = (c1, inp, 1, 1)
        keys.update(_bn(f"{p}.bn1", c1))
        keys[f"{p}.conv2.weight"] = (c1, c1, 3, 3)
        keys.update(_bn(f"{p}.bn2", c1))
        keys[f"{p}.conv3.weight"] = (4 * c1, c1, 1, 1)
        keys.update(_bn(f"{p}.bn3", 4 * c1))
        if b == 0 and inp != 4 * c1:
            keys[f"{p}.downsample.0.weight"] = (4 * c1, inp, 1, 1)
            keys.update(_bn(f"{p}.downsample.1", 4 * c1))
        inp = 4 * c1
    pre = [4 * c1]
    for s in (2, 3, 4):
        st = cfg[f"stage{s}"]
        cur = list(st["num_channels"])
        for i, c in enumerate(cur):  # transition{s-1}
            t = f"transition{s - 1}.{i}"
            if i < len(pre):
                if c != pre[i]:
                    keys[f"{t}.0.weight"] = (c, pre[i], 3, 3)
                    keys.update(_bn(f"{t}.1", c))
            else:
                for j in range(i + 1 - len(pre)):
                    cin = pre[-1]
                    cout = c if j == i - len(pre) else cin
                    keys[f"{t}.{j}.0.weight"] = (cout, cin, 3, 3)
                    keys.update(_bn(f"{t}.{j}.1", cout))
        for m in range(st["num_modules"]):
            for br, c in enumerate(cur):
                for b in range(st["num_blocks"][br]):
                    p = f"stage{s}.{m}.branches.{br}.{b}"
                    keys[f"{p}.conv1.weight"] = (c, c, 3, 3)
                    keys.update(_bn(f"{p}.bn1", c))
                    keys[f"{p}.conv2.weight"] = (c, c, 3, 3)
                    keys.update(_bn(f"{p}.bn2", c))
            for i, ci in enumerate(cur):
                for j, cj in enumerate(cur):
                    f = f"stage{s}.{m}.fuse_layers.{i}.{j}"
                    if j > i:
                        keys[f"{f}.0.weight"] = (ci, cj, 1, 1)
                        keys.update(_bn(f"{f}.1", ci))
                    elif j < i:
                        for k in range(i - j):
                            cout = ci if k == i - j - 1 else cj
                            keys[f"{f}.{k}.0.weight"] = (cout, cj, 3, 3)
                            keys.update(_bn(f"{f}.{k}.1", cout))
        pre = cur
    return keys


def official_semgcn_keys(nnz: int, hid: int, blocks: int) -> dict[str, tuple]:
    """SemGCN keys (``create_sgcn``: coords_dim (2, hid), p_dropout 0, no non-local blocks)."""
    keys: dict[str, tuple] = {}

    def gconv(p: str, cin: int, cout: int) -> None:
        keys.update({f"{p}.W": (2, cin, cout), f"{p}.e": (1, nnz), f"{p}.bias": (cout,)})

    gconv("gconv_input.0.gconv", 2, hid)
    keys.update(_bn("gconv_input.0.bn", hid))
    for i in range(blocks):
        for g in (1, 2):
            gconv(f"gconv_layers.{i}.gconv{g}.gconv", hid, hid)
            keys.update(_bn(f"gconv_layers.{i}.gconv{g}.bn", hid))
    gconv("gconv_output", hid, hid)
    return keys


def official_checkpoint(cfg: dict, nnz: int, hid: int, blocks: int, feat: int, *, stage2: bool = True) -> dict:
    """A fixture in the layout of A.5/A.6: {'model': module.-prefixed keys, 'contrast', 'optimizer', 'epoch'}."""
    g = torch.Generator().manual_seed(3)

    def rand(shape: tuple) -> torch.Tensor:
        return torch.tensor(7) if shape == () else torch.randn(shape, generator=g)

    hr = official_hrnet_keys(cfg)
    c = sum(cfg["stage4"]["num_channels"])
    model = {}
    for enc in ("encoder1", "encoder2"):
        model.update({f"module.{enc}.{k}": rand(s) for k, s in hr.items()})
    model.update({f"module.encoder3.{k}": rand(s) for k, s in official_semgcn_keys(nnz, hid, blocks).items()})
    for h, cin in (("head1", c), ("head2", c), ("head3", hid)):
        model[f"module.{h}.0.weight"], model[f"module.{h}.0.bias"] = rand((feat, cin)), rand((feat,))
    if stage2:
        for h in ("encoder1_linear", "encoder2_linear"):
            model[f"module.{h}.weight"], model[f"module.{h}.bias"] = rand((hid, c, 1, 1)), rand((hid,))
    contrast = {f"memory_{m}": F.normalize(torch.randn(10, feat, generator=g), dim=1) for m in (1, 2, 3)}
    return {"model": model, "contrast": contrast, "optimizer": {}, "epoch": 100}


def _tiny_model(**kw) -> H.HCMoCo:
    torch.manual_seed(0)
    return create_model("hcmoco_tiny", skeleton="mpii16", **kw)


def test_official_checkpoint_loads_and_encoder_extraction_matches_transfer_ckpt():
    model = _tiny_model()
    nnz = 3 * 16 - 2  # a tree of 16 joints: 15 edges both ways + 16 self-loops
    ckpt = official_checkpoint(H.TINY_HRNET, nnz, hid=32, blocks=2, feat=32)
    sd = H.convert_official_checkpoint(ckpt, model)
    model.load_state_dict(sd, strict=True)
    loaded = model.state_dict()
    for k, v in ckpt["model"].items():
        assert torch.equal(loaded[k[len("module."):]], v), k
    for which in ("encoder1", "encoder2"):
        # transfer_ckpt.py: keep keys with k[7:15] == which, strip the first 16 characters. That rule also takes
        # module.encoder1_linear.* as "linear.*" (the loaders drop them by name); extract_encoder leaves them out.
        official = {k[16:]: v for k, v in ckpt["model"].items() if k[7:15] == which}
        expected = {k: v for k, v in official.items() if not k.startswith("linear.")}
        assert sorted(set(official) - set(expected)) == ["linear.bias", "linear.weight"]
        for source in (ckpt, ckpt["model"], model.state_dict()):
            flat = H.extract_encoder(source, which)
            assert flat.keys() == expected.keys() and all(torch.equal(flat[k], expected[k]) for k in flat)
        enc = H.HRNetEncoder("hrnet_w18", hrnet_args=H.TINY_HRNET)
        enc.load_state_dict(expected, strict=True)
        trunk = timm.create_model("hrnet_w18", pretrained=False, features_only=True, feature_location="",
                                  out_indices=(1, 2, 3, 4), **H.TINY_HRNET)
        trunk.load_state_dict(expected, strict=True)


def test_stage1_checkpoint_without_dense_heads_and_mismatches():
    ckpt = official_checkpoint(H.TINY_HRNET, 46, hid=32, blocks=2, feat=32, stage2=False)
    model = _tiny_model(dense_heads=False)
    model.load_state_dict(H.convert_official_checkpoint(ckpt, model), strict=True)
    stage2 = _tiny_model()
    sd = H.convert_official_checkpoint(ckpt, stage2)  # encoder{1,2}_linear may be missing: they start random
    missing, unexpected = stage2.load_state_dict(sd, strict=False)
    assert sorted(missing) == ["encoder1_linear.bias", "encoder1_linear.weight", "encoder2_linear.bias",
                               "encoder2_linear.weight"] and not unexpected
    bad = dict(ckpt["model"])
    bad["module.encoder3.gconv_output.e"] = torch.ones(1, 40)
    with pytest.raises(DataError, match="encoder3.gconv_output.e"):
        H.convert_official_checkpoint(bad, model)
    bad = dict(ckpt["model"], **{"module.encoder1.incre_modules.0.weight": torch.ones(1)})
    with pytest.raises(DataError, match="unexpected"):
        H.convert_official_checkpoint(bad, model)
    with pytest.raises(DataError, match="encoder2"):
        H.extract_encoder({"encoder1.conv1.weight": torch.ones(1)}, "encoder2")
    with pytest.raises(ConfigError):
        H.extract_encoder(ckpt, "encoder3")


# ======================================================================================================= SemGCN
def test_parent_tables_are_trees_and_adjacency():
    for name, parents in H.HCMOCO_PARENTS.items():
        assert H.is_tree(parents), name
        adj = H.hcmoco_adjacency(name)
        n = len(parents)
        assert adj.shape == (n, n) and torch.equal(adj, adj.T) and adj.diagonal().all()
        assert int(adj.sum()) == 3 * n - 2
    assert len(H.HCMOCO_PARENTS["mpii16"]) == 16 and len(H.HCMOCO_PARENTS["coco13"]) == 13
    mpii = H.hcmoco_adjacency("mpii")
    assert mpii[12, 8] and mpii[13, 8] and not mpii[12, 7]  # shoulders hang from the upper neck, not the thorax
    coco = H.hcmoco_adjacency("coco_reduce")
    assert torch.equal(coco, H.hcmoco_adjacency("coco13"))
    assert coco[9, 6] and coco[10, 6] and coco[2, 9] and coco[3, 10]  # shoulders-head, hips-shoulders
    assert not H.is_tree([1, 0, -1]) and not H.is_tree([-1, -1]) and not H.is_tree([1, 2])
    limbs = H.hcmoco_adjacency("coco17")  # any registered skeleton: its limbs
    assert limbs.shape == (17, 17) and limbs[5, 7]
    with pytest.raises(ConfigError, match="not a tree"):
        H.hcmoco_adjacency(parents=[0, -1, 5])
    with pytest.raises(ConfigError, match="model.skeleton"):
        H.hcmoco_adjacency("no_such_skeleton")


def semgraphconv_reference(x: np.ndarray, adj: np.ndarray, W: np.ndarray, e: np.ndarray, bias: np.ndarray
                           ) -> np.ndarray:
    """Loop reference: softmax of e over each row's neighbours (row-major order of e), W[0] for the node itself,
    W[1] for its neighbours."""
    bsz, n, _ = x.shape
    ew = np.full((n, n), -np.inf)
    k = 0
    for i in range(n):
        for j in range(n):
            if adj[i, j]:
                ew[i, j] = e[k]
                k += 1
    a = np.exp(ew - ew.max(1, keepdims=True))
    a /= a.sum(1, keepdims=True)
    out = np.zeros((bsz, n, W.shape[2]))
    for b in range(bsz):
        for i in range(n):
            for j in range(n):
                if adj[i, j]:
                    out[b, i] += a[i, j] * (x[b, j] @ W[0 if i == j else 1])
            out[b, i] += bias
    return out


def test_semgraphconv_equals_loop_reference():
    torch.manual_seed(0)
    adj = H.hcmoco_adjacency("coco13")
    conv = H.SemGraphConv(4, 5, adj).double()
    with torch.no_grad():
        conv.e.copy_(torch.randn_like(conv.e))
    x = torch.randn(2, 13, 4, dtype=torch.float64)
    ref = semgraphconv_reference(x.numpy(), adj.numpy(), conv.W.detach().numpy(), conv.e.detach().numpy()[0],
                                 conv.bias.detach().numpy())
    np.testing.assert_allclose(conv(x).detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    a = conv.edge_weights()
    assert torch.allclose(a.sum(1), torch.ones(13, dtype=torch.float64)) and torch.all(a[~adj] == 0)
    # locality: a joint's output depends only on itself and its graph neighbours
    y = x.clone()
    y[:, 0] += 1.0  # joint 0 (r-ankle) neighbours: 1 (r-knee) only
    changed = (conv(y) - conv(x)).abs().amax((0, 2)) > 0
    assert changed.nonzero().flatten().tolist() == [0, 1]


def test_semgcn_layers_and_keypoint_head():
    model = _tiny_model().eval()
    gcn = model.encoder3
    assert isinstance(gcn.gconv_output, H.SemGraphConv) and len(gcn.gconv_layers) == 2
    assert gcn.gconv_input[0].gconv.W.shape == (2, 2, 32) and gcn.gconv_output.e.shape == (1, 46)
    full = H.SemGCN(H.hcmoco_adjacency("mpii16"))
    assert len(full.gconv_layers) == 4 and full.gconv_output.W.shape == (2, 128, 128)
    torch.manual_seed(1)
    joints = torch.rand(3, 16, 2) * 2 - 1
    with torch.no_grad():
        kp = gcn(joints)
        out = model(torch.randn(3, 3, 32, 32), torch.randn(3, 3, 32, 32), joints)
    assert kp.shape == (3, 16, 32) and torch.equal(out["kp"], kp)
    assert torch.allclose(out["f_kp"], F.normalize(model.head3[0](kp.mean(1)), dim=1))
    with pytest.raises(DataError, match="joints"):
        gcn(torch.zeros(2, 13, 2))
    coco = create_model("hcmoco_tiny", skeleton="coco13")
    assert coco.num_joints == 13 and coco.encoder3.gconv_output.e.shape == (1, 37)
    assert list_models("hcmoco_*") == ["hcmoco_hrnet_w18", "hcmoco_hrnet_w18_pn", "hcmoco_hrnet_w32", "hcmoco_pn_tiny",
                                       "hcmoco_tiny"]


# ============================================================================================= the HCMoCo model
def test_tiny_model_outputs_heads_and_gradients():
    model = _tiny_model(in_chans=1)
    torch.manual_seed(2)
    rgb, depth, joints = torch.randn(2, 1, 64, 64), torch.randn(2, 1, 64, 64), torch.rand(2, 16, 2)
    out = model(rgb, depth, joints)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "f_rgb": (2, 32), "f_depth": (2, 32), "f_kp": (2, 32), "kp": (2, 16, 32),
        "dense_rgb": (2, 32, 16, 16), "dense_depth": (2, 32, 16, 16)}
    for k in ("f_rgb", "f_depth", "f_kp"):
        assert torch.allclose(out[k].norm(dim=1), torch.ones(2), atol=1e-6)
    feats = model.encoder1(rgb)
    pooled = torch.cat([f.mean((2, 3)) for f in feats], 1)
    assert pooled.shape == (2, 120)
    assert torch.allclose(out["f_rgb"], F.normalize(model.head1[0](pooled), dim=1), atol=1e-6)
    assert torch.allclose(out["dense_rgb"], model.encoder1_linear(H.HRNetEncoder.merge(feats)), atol=1e-6)
    loss = sum(v.sum() for k, v in out.items() if k != "kp") + out["kp"].pow(2).sum()
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, no_grad[:5]
    assert model.encoder3.gconv_output.e.grad.abs().sum() > 0
    assert "dense_rgb" not in model(rgb, depth, joints, dense=False)
    assert model.model_args == {"skeleton": "mpii16", "in_chans": 1}
    stage1 = _tiny_model(dense_heads=False)
    assert not hasattr(stage1, "encoder1_linear") and "dense_rgb" not in stage1(rgb.repeat(1, 3, 1, 1),
                                                                               depth.repeat(1, 3, 1, 1), joints)
    with pytest.raises(ConfigError, match="dense"):
        stage1(rgb.repeat(1, 3, 1, 1), depth.repeat(1, 3, 1, 1), joints, dense=True)


# ================================================================================================== PointNet++
def fps_reference(xyz: np.ndarray, npoint: int, start: int) -> list[int]:
    n = len(xyz)
    dist = [1e10] * n
    out, far = [], start
    for _ in range(npoint):
        out.append(far)
        cx, cy, cz = xyz[far]
        best, best_i = -1.0, 0
        for k in range(n):
            x, y, z = xyz[k]
            d = (x - cx) * (x - cx) + (y - cy) * (y - cy) + (z - cz) * (z - cz)
            dist[k] = min(dist[k], d)
            if dist[k] > best:
                best, best_i = dist[k], k
        far = best_i
    return out


def test_fps_equals_loop_reference():
    g = torch.Generator().manual_seed(0)
    xyz = torch.rand(3, 120, 3, generator=g, dtype=torch.float64)
    idx = P.farthest_point_sample(xyz, 40)
    for b in range(3):
        assert idx[b].tolist() == fps_reference(xyz[b].numpy(), 40, 0)
    starts = torch.tensor([5, 0, 77])
    idx = P.farthest_point_sample(xyz, 40, start=starts)
    for b in range(3):
        assert idx[b].tolist() == fps_reference(xyz[b].numpy(), 40, int(starts[b]))
    assert len(set(P.farthest_point_sample(xyz, 120)[0].tolist())) == 120  # all points when npoint == N
    assert P.farthest_point_sample(xyz[:, :4], 6)[0].tolist()[4:] == [0, 0]


def ball_query_reference(xyz: np.ndarray, centres: np.ndarray, radius: float, nsample: int) -> np.ndarray:
    """The CUDA op's loop: scan points in index order, keep those with d^2 < r^2; the first one found fills every
    slot first; zeros when none is found."""
    out = np.zeros((len(centres), nsample), dtype=np.int64)
    r2 = radius * radius
    for m, (cx, cy, cz) in enumerate(centres):
        cnt = 0
        for k, (x, y, z) in enumerate(xyz):
            d2 = (x - cx) * (x - cx) + (y - cy) * (y - cy) + (z - cz) * (z - cz)
            if d2 < r2:
                if cnt == 0:
                    out[m, :] = k
                out[m, cnt] = k
                cnt += 1
                if cnt >= nsample:
                    break
    return out


def test_ball_query_equals_loop_reference_padding_and_boundary():
    g = torch.Generator().manual_seed(1)
    xyz = torch.rand(2, 300, 3, generator=g, dtype=torch.float64)
    centres = torch.cat([xyz[:, :20], torch.full((2, 1, 3), 5.0, dtype=torch.float64)], 1)  # last: no neighbour
    for radius, nsample in ((0.15, 8), (0.3, 16), (0.05, 4), (2.0, 400)):
        got = P.ball_query(xyz, centres, radius, nsample, chunk=7)
        for b in range(2):
            np.testing.assert_array_equal(got[b].numpy(),
                                          ball_query_reference(xyz[b].numpy(), centres[b].numpy(), radius, nsample))
    assert P.ball_query(xyz, centres, 0.15, 8)[:, -1].eq(0).all()  # no neighbour: zeros
    # boundary: d^2 == r^2 exactly is outside (0.5^2 = 0.25 is exact); padding repeats the first index found
    pts = torch.tensor([[[0.5, 0, 0], [0, 0, 0], [0, 0.25, 0], [0, 0, 0.4999], [0, -0.5, 0]]], dtype=torch.float64)
    got = P.ball_query(pts, torch.zeros(1, 1, 3, dtype=torch.float64), 0.5, 6)
    assert got[0, 0].tolist() == [1, 2, 3, 1, 1, 1]


def test_grouping_gather_and_three_nn():
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(2, 5, 30, generator=g)
    idx = torch.randint(0, 30, (2, 7, 4), generator=g)
    grouped = P.group_points(feats, idx)
    assert grouped.shape == (2, 5, 7, 4)
    assert torch.equal(grouped[1, :, 3, 2], feats[1, :, idx[1, 3, 2]])
    assert torch.equal(P.gather_points(feats, idx[:, :, 0]), grouped[..., 0])
    known, unknown = torch.rand(2, 20, 3, generator=g), torch.rand(2, 50, 3, generator=g)
    dist, nn_idx = P.three_nn(unknown, known, chunk=9)
    brute = torch.cdist(unknown.double(), known.double())
    assert torch.equal(nn_idx, brute.topk(3, largest=False).indices)
    assert torch.allclose(dist.double(), brute.topk(3, largest=False).values, atol=1e-6)
    kf = torch.randn(2, 4, 20, generator=g)
    at_known = P.interpolate_features(known, known, kf)  # a known point interpolates to its own feature
    assert torch.allclose(at_known, kf, atol=1e-5)


TINY_PN = {"npoints": (48, 12), "radii": ((0.2, 0.4), (0.4, 0.8)), "nsamples": ((8, 16), (8, 16)),
           "mlps": (((8,), (8, 8)), ((16,), (16,))), "fp_mlps": ((16,), (16, 16))}


def test_pointnet_encoder_shapes_gradients_and_full_config():
    torch.manual_seed(0)
    enc = P.PointNetEncoder(feat_dim=8, **TINY_PN)
    assert [sa.out_channels for sa in enc.encoder.sa] == [16, 32]
    xyz = torch.rand(2, 96, 3)
    out = enc(xyz)
    assert out["points"].shape == (2, 16, 96) and out["global"].shape == (2, 8) and out["dense"].shape == (2, 8, 96)
    assert torch.allclose(out["global"].norm(dim=1), torch.ones(2), atol=1e-6)
    (out["global"].sum() + out["dense"].pow(2).mean()).backward()
    no_grad = [n for n, p in enc.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not no_grad, no_grad
    with torch.device("meta"):
        full = P.PointNetEncoder()
    assert [sa.out_channels for sa in full.encoder.sa] == [96, 256, 512, 1024]
    assert [fp.mlp[0].in_channels for fp in full.encoder.fp] == [256, 96 + 512, 256 + 512, 512 + 1024]
    assert full.encoder.sa[0].mlps[1][0].in_channels == 3 and full.encoder.out_channels == 128
    ssg = P.SetAbstraction(None, 0.0, 0, (8, 12), in_channels=4)
    c, f = ssg(xyz, torch.randn(2, 4, 96))
    assert c.shape == (2, 1, 3) and f.shape == (2, 12, 1)


def test_global_feature_is_permutation_invariant():
    """Invariant for permutations that keep point 0 first (FPS starts at index 0, as the CUDA op) when no ball
    holds more than nsample points (ball query keeps the first nsample in index order, as the op)."""
    torch.manual_seed(0)
    cfg = dict(TINY_PN, nsamples=((64, 64), (48, 48)))
    enc = P.PointNetEncoder(feat_dim=8, **cfg).eval()
    xyz = torch.rand(2, 64, 3)
    perm = torch.cat([torch.zeros(1, dtype=torch.long), torch.randperm(63) + 1])
    with torch.no_grad():
        a, b = enc(xyz), enc(xyz[:, perm])
    assert torch.allclose(a["global"], b["global"], atol=1e-5)
    assert torch.allclose(a["points"][:, :, perm], b["points"], atol=1e-5)


def test_dense_map_subsamples_exactly_like_nearest_resize():
    g = torch.Generator().manual_seed(4)
    sampled, dense = torch.rand(2, 40, 3, generator=g), torch.randn(2, 6, 40, generator=g)
    pixels = torch.rand(2, 30 * 20, 3, generator=g)
    full = P.PointNetEncoder.dense_map(dense, sampled, pixels, (30, 20))
    assert full.shape == (2, 6, 30, 20)
    for out_size in ((8, 5), (15, 10), (7, 20)):
        small = P.PointNetEncoder.dense_map(dense, sampled, pixels, (30, 20), out_size)
        assert torch.allclose(small, F.interpolate(full, size=out_size, mode="nearest"), atol=1e-6)


# ======================================================================================== point clouds from depth
def test_depth_to_points_against_hand_projection():
    fx, fy, cx, cy = 500.0, 480.0, 3.5, 2.0
    K = torch.tensor([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=torch.float64)
    depth = torch.zeros(5, 8, dtype=torch.float64)
    depth[1, 2], depth[4, 7], depth[0, 0] = 1500.0, 2000.0, 800.0
    pts = P.depth_to_points(depth, K)
    assert pts.index.tolist() == [0, 1 * 8 + 2, 4 * 8 + 7] and bool(pts.valid)
    hand = [[(j - cx) * z / fx, (i - cy) * z / fy, z] for i, j, z in ((0, 0, 0.8), (1, 2, 1.5), (4, 7, 2.0))]
    np.testing.assert_allclose(pts.points.numpy(), hand, rtol=1e-12)
    # batched, per-sample K, sampling with replacement inside the mask, an empty mask
    depth_b = torch.stack([depth, depth * 2, torch.zeros_like(depth)])
    K2 = torch.tensor([[2 * fx, 0, cx], [0, 2 * fy, cy], [0, 0, 1]], dtype=torch.float64)
    K_b = torch.stack([K, K2, K])
    g = torch.Generator().manual_seed(0)
    s = P.depth_to_points(depth_b, K_b, num_points=50, generator=g)
    assert s.points.shape == (3, 50, 3) and s.valid.tolist() == [True, True, False]
    assert set(s.index[0].tolist()) <= {0, 10, 39} and len(set(s.index[1].tolist())) == 3
    assert torch.all(s.points[2] == 0) and torch.all(s.index[2] == 0)
    i, j = s.index[1] // 8, s.index[1] % 8
    z = depth_b[1].flatten()[s.index[1]] / 1000
    np.testing.assert_allclose(s.points[1].numpy(), torch.stack([(j - cx) * z / (2 * fx), (i - cy) * z / (2 * fy),
                                                                  z], -1).numpy(), rtol=1e-12)
    mask = torch.zeros(5, 8, dtype=torch.bool)
    mask[4, 7] = True
    assert P.depth_to_points(depth, K, mask=mask).index.tolist() == [39]
    with pytest.raises(DataError, match="num_points"):
        P.depth_to_points(depth_b, K_b)
    with pytest.raises(DataError, match="K"):
        P.depth_to_points(depth_b, torch.eye(4))


def test_hcmoco_backproject_formula():
    depth = torch.tensor([[0.1, -0.2]])  # mean-centred metres
    rows, cols = torch.tensor([[100.0, 300.0]]), torch.tensor([[50.0, 400.0]])
    out = P.hcmoco_backproject(depth, rows, cols, (424, 512), 2.5)
    for k, (d, r, c) in enumerate(((0.1, 100, 50), (-0.2, 300, 400))):
        z = d + 2.5
        assert out[0, k].tolist() == pytest.approx([(r - 212) * z * 0.0035, (256 - c) * z * 0.0035, d])
    assert math.isclose(float(out[0, 0, 2]), 0.1, rel_tol=1e-6)
