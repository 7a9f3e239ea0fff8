"""PCT (pose2d.md §3.3-3.6, §3.9): tokenizer and head shapes, the EMA codebook step against the written-out
formula, masking, straight-through gradient, losses, official-layout fixtures against an independent reference
forward written here from the brief, checkpoint errors, flip averaging, recipes.

Small dimensions throughout; the tiny PCT Swin (128x128 -> 256 x 4 x 4) stands in for the Swin-B backbone.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from humanvision.errors import ConfigError, DataError
from humanvision.methods.pct import (
    PCTClassifierStage,
    PCTConfig,
    PCTRecipe,
    PCTTokenizerStage,
    build_method,
    codebook_stats,
    export_official,
    flip_joints,
    is_pct_recipe,
    joint_loss,
    load_method_weights,
    load_recipe,
    load_tokenizer_weights,
    token_accuracy,
)
from humanvision.models.pct import PCTHead, PCTTokenizer
from humanvision.skeletons import get_skeleton

torch.set_num_threads(1)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FLIP = get_skeleton("coco17").flip_index
K, S = 17, 128  # joints, crop side (the tiny Swin's input)
SMALL = {"token_num": 6, "token_dim": 8, "codebook_size": 16, "enc_num_blocks": 2, "enc_hidden_dim": 12,
         "enc_token_inter_dim": 5, "enc_hidden_inter_dim": 10, "dec_num_blocks": 1, "dec_hidden_dim": 6,
         "dec_token_inter_dim": 4, "dec_hidden_inter_dim": 7, "conv_num_blocks": 2, "conv_channels": 8,
         "head_num_blocks": 2, "head_hidden_dim": 6, "head_token_inter_dim": 3, "head_hidden_inter_dim": 9}


def small_tokenizer(guide_channels: int = 0, **kw) -> PCTTokenizer:
    args = {"num_joints": K, "token_num": 6, "token_dim": 8, "token_class_num": 16,
            "guide_channels": guide_channels, "image_size": S, "enc_num_blocks": 2, "enc_hidden_dim": 12,
            "enc_token_inter_dim": 5, "enc_hidden_inter_dim": 10, "dec_hidden_dim": 6,
            "dec_token_inter_dim": 4, "dec_hidden_inter_dim": 7}
    return PCTTokenizer(**{**args, **kw})


def random_joints(b: int, seed: int = 0, invisible: float = 0.2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(b, K, 2, generator=g) * (S - 1)
    vis = (torch.rand(b, K, generator=g) > invisible).float()
    return torch.cat([xy, vis[..., None]], -1)


def pct_config(stage: str = "tokenizer", guide: str = "none", **kw) -> PCTConfig:
    tokenizer = kw.pop("tokenizer_weights", "unused" if stage == "classifier" else None)
    return PCTConfig(stage=stage, guide=guide, backbone=kw.pop("backbone", "pct_swin_tiny_hmp"), input_size=S,
                     tokenizer_weights=tokenizer, **{**SMALL, **kw})


def method_for(stage: str = "tokenizer", guide: str = "none", **kw):
    torch.manual_seed(0)
    return build_method(PCTRecipe(pct=pct_config(stage, guide, **kw)), pretrained=False)


# ------------------------------------------------------------------------------------------------ shapes
def test_tokenizer_and_head_shapes():
    torch.manual_seed(0)
    tok = small_tokenizer(guide_channels=10).eval()
    feats = torch.randn(3, 10, 4, 4)
    out = tok(random_joints(3), feats)
    assert out["joints"].shape == (3, K, 2) and out["z"].shape == out["q"].shape == (3, 6, 8)
    assert out["indices"].shape == (3, 6) and out["indices"].dtype == torch.int64
    assert 0 <= out["indices"].min() and out["indices"].max() < 16 and out["counts"].sum() == 18
    head = PCTHead(10, 4, token_num=6, token_class_num=16, conv_channels=8, num_blocks=2, hidden_dim=6,
                   token_inter_dim=3, hidden_inter_dim=9)
    assert head(feats).shape == (3, 6, 16)
    with pytest.raises(DataError, match=r"\(B, C, 4, 4\).*\(3, 10, 5, 5\)"):
        head(torch.randn(3, 10, 5, 5))
    with pytest.raises(DataError, match="square"):
        tok(random_joints(3), torch.randn(3, 10, 4, 5))
    with pytest.raises(DataError, match=r"\(B, 17, 3\)"):
        tok(torch.zeros(3, 16, 3), feats)


def test_published_sizes():
    """Swin-B: tokenizer ~2.7 M parameters (§3.3), head ~38.6 M of which 35.6 M in mixer_trans (§3.1)."""
    recipe = load_recipe(CONFIGS / "pct_base_classifier.yaml", unchecked=("data.", "pct."))
    with torch.device("meta"):
        method = build_method(recipe, pretrained=False)
    assert method.head.feature_size == (8, 8) and method.tokenizer.start_img_embed.weight.shape == (256, 1024)
    assert sum(p.numel() for p in method.tokenizer.parameters()) == pytest.approx(2.7e6, rel=0.02)
    assert sum(p.numel() for p in method.head.parameters()) == pytest.approx(38.6e6, rel=0.01)
    assert method.head.mixer_trans.ff[0].weight.shape == (34 * 64, 256 * 64)
    assert {n for n, p in method.named_parameters() if p.requires_grad} == {
        n for n, _ in method.named_parameters() if n.startswith("head.")}


# ------------------------------------------------------------------------------------------- the codebook
def test_ema_update_equals_the_formula():
    torch.manual_seed(0)
    tok = small_tokenizer().train()
    tok.ema_cluster_size.uniform_(0.0, 3.0)  # a state after some steps
    E0, N0, m0 = tok.codebook.clone(), tok.ema_cluster_size.clone(), tok.ema_w.clone()
    z = torch.randn(4, 6, 8)
    q, idx = tok.quantize(z)
    tok.update_codebook(z, idx)

    # §3.3 written out: nearest entry, N <- gN + (1-g) sum onehot; n = sum N; N <- (N + eps) / (n + V eps) n;
    # m <- g m + (1-g) onehot^T z; E <- m / N
    g, eps, V = 0.9, 1e-5, 16
    flat = z.reshape(-1, 8)
    nearest = [min(range(V), key=lambda j, r=r: float(((r - E0[j]) ** 2).sum())) for r in flat]
    assert idx.reshape(-1).tolist() == nearest
    torch.testing.assert_close(q.reshape(-1, 8), E0[nearest])  # the codebook before the update
    onehot = torch.zeros(len(flat), V)
    for i, j in enumerate(nearest):
        onehot[i, j] = 1.0
    N = g * N0 + (1 - g) * onehot.sum(0)
    n = N.sum()
    N = (N + eps) / (n + V * eps) * n
    m = g * m0 + (1 - g) * onehot.t() @ flat
    torch.testing.assert_close(tok.ema_cluster_size, N)
    torch.testing.assert_close(tok.ema_w, m)
    torch.testing.assert_close(tok.codebook, m / N[:, None])


def test_ema_with_decay_zero_gives_smoothed_means():
    """gamma = 0, one batch: a used entry becomes the mean of its z, up to the Laplace factor
    n / (n + V eps)."""
    torch.manual_seed(1)
    tok = small_tokenizer(ema_decay=0.0).train()
    z = torch.randn(2, 6, 8)
    _, idx = tok.quantize(z)
    tok.update_codebook(z, idx)
    flat, idx = z.reshape(-1, 8), idx.reshape(-1)
    n, V, eps = len(flat), 16, 1e-5
    for j in idx.unique().tolist():
        sel = flat[idx == j]
        smoothed = (len(sel) + eps) / (n + V * eps) * n
        torch.testing.assert_close(tok.codebook[j], sel.sum(0) / smoothed)
        torch.testing.assert_close(tok.codebook[j], sel.mean(0), rtol=1e-4, atol=1e-4)


def test_codebook_only_changes_in_training_mode():
    torch.manual_seed(0)
    tok = small_tokenizer()
    before = {k: v.clone() for k, v in tok.named_buffers()}
    tok.eval()(random_joints(4))
    assert all(torch.equal(v, before[k]) for k, v in tok.named_buffers())
    tok.train()(random_joints(4))
    assert not torch.equal(tok.codebook, before["codebook"]) and tok.ema_cluster_size.sum() > 0


def test_codebook_stats():
    counts, ema_counts = torch.tensor([5.0, 5.0, 5.0, 5.0, 0.0, 0.0]), torch.tensor([1.0, 0.5, 1e-5, 0, 2, 3])
    stats = codebook_stats(counts, ema_counts)
    assert stats["perplexity"].item() == pytest.approx(4.0, rel=1e-5)
    assert stats["dead_codes"].item() == pytest.approx(2 / 6)


# ---------------------------------------------------------------------------------------------- masking
def test_masking_only_in_stage_one_training():
    torch.manual_seed(0)
    tok = small_tokenizer(drop_rate=0.5)
    joints = random_joints(8, invisible=0.0)
    token = tok.invisible_token.detach().reshape(-1)

    def masked(t: PCTTokenizer) -> torch.Tensor:
        with torch.no_grad():
            return (t.embed_joints(joints) == token).all(-1)

    assert not masked(tok.eval()).any()  # eval: every visible joint keeps its embedding
    frac = masked(tok.train()).float().mean().item()
    assert 0.3 < frac < 0.7  # training: ~50% replaced
    stage1 = PCTTokenizerStage(tok)
    assert stage1.train().tokenizer.training and not stage1.eval().tokenizer.training

    # stage II trains its head with the tokenizer frozen in eval mode: deterministic GT tokens, no EMA update
    method = method_for("classifier", drop_rate=0.5)
    method.train()
    assert method.head.training and not method.tokenizer.training and not method.backbone.training
    before = method.tokenizer.codebook.clone()
    batch = {"image": torch.randn(2, 3, S, S), "joints": random_joints(2)}
    method(batch)
    assert torch.equal(method.tokenizer.codebook, before)
    a = method.tokenizer.quantize(method.tokenizer.encode(batch["joints"]))[1]
    b = method.tokenizer.quantize(method.tokenizer.encode(batch["joints"]))[1]
    assert torch.equal(a, b)


def test_drop_rate_zero_and_invisible_joints():
    torch.manual_seed(0)
    tok = small_tokenizer(drop_rate=0.0).train()
    joints = random_joints(4, invisible=0.0)
    with torch.no_grad():
        # the invisible token never appears
        assert torch.equal(tok.embed_joints(joints), tok.start_embed(joints[..., :2]))
    tok.eval()
    joints[:, 3, 2] = 0.0
    other = joints.clone()
    other[:, 3, :2] += 50.0  # an invisible joint's coordinates do not matter
    with torch.no_grad():
        torch.testing.assert_close(tok.encode(joints), tok.encode(other), rtol=0, atol=0)


# --------------------------------------------------------------------------------------- gradient, losses
def test_straight_through_gradient():
    """The decoder sees q in the forward pass; dL/dz of the straight-through input equals dL/dq."""
    torch.manual_seed(0)
    tok = small_tokenizer().eval()
    target = torch.randn(2, K, 2) * 10
    z = tok.encode(random_joints(2)).detach().requires_grad_(True)
    q, _ = tok.quantize(z)
    q = q.detach().requires_grad_(True)
    st = z + (q - z).detach()
    torch.testing.assert_close(st, q, rtol=0, atol=1e-6)
    F.mse_loss(tok.decode(st), target).backward()
    F.mse_loss(tok.decode(q), target).backward()
    assert z.grad.abs().sum() > 0
    torch.testing.assert_close(z.grad, q.grad)
    # the stage-I loss: gradients reach the encoder through the estimator (joint term) and the commitment term
    method = PCTTokenizerStage(small_tokenizer(drop_rate=0.0)).train()
    method({"joints": random_joints(4)})["loss"].backward()
    assert method.tokenizer.start_embed.weight.grad.abs().sum() > 0
    assert method.tokenizer.recover_embed.weight.grad.abs().sum() > 0


def test_smooth_l1_joint_loss():
    beta = 0.05
    pred = torch.zeros(1, 4, 2)
    target = torch.tensor([[[1.0, 0.01], [0.03, -2.0], [5.0, 5.0], [0.0, 0.0]]])
    vis = torch.tensor([[1.0, 1.0, 0.0, 1.0]])
    per = [1 - beta / 2, 0.5 * 0.01**2 / beta, 0.5 * 0.03**2 / beta, 2 - beta / 2, 0, 0, 0, 0]
    assert per[0] == pytest.approx(0.975) and per[1] == pytest.approx(0.001)
    # the invisible joint (5, 5) contributes 0 but counts in the mean over B * K * 2 = 8
    assert joint_loss(pred, target, vis, beta).item() == pytest.approx(sum(per) / 8, rel=1e-6)
    assert joint_loss(target, target, vis, beta).item() == 0.0


def test_token_accuracy_and_soft_decoding():
    logits = torch.tensor([[[5.0, 4.0, 3.0, 0.0, -1.0, -2.0], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]]])
    acc = token_accuracy(logits, torch.tensor([[1, 1]]))
    assert acc["top1_acc"].item() == 0.0 and acc["top2_acc"].item() == 0.5 and acc["top5_acc"].item() == 1.0
    torch.manual_seed(0)
    tok = small_tokenizer().eval()
    idx = torch.randint(0, 16, (3, 6))
    torch.testing.assert_close(tok.decode_soft(1e4 * F.one_hot(idx, 16).float()), tok.decode_indices(idx))


def test_flip_joints():
    j = random_joints(2)
    torch.testing.assert_close(flip_joints(flip_joints(j, S, FLIP), S, FLIP), j)
    f = flip_joints(j, 256, FLIP)
    torch.testing.assert_close(f[:, 1, 0], 255 - j[:, 2, 0])  # left eye <- mirrored right eye, x' = 255 - x
    torch.testing.assert_close(f[:, 1, 1:], j[:, 2, 1:])


# ------------------------------------------------------------------------- official layout and reference
def _mixer_keys(prefix: str, h: int, t: int, t_inter: int, h_inter: int) -> dict[str, tuple]:
    return {f"{prefix}layernorm1.weight": (h,), f"{prefix}layernorm1.bias": (h,),
            f"{prefix}MLP_token.ff.0.weight": (t_inter, t), f"{prefix}MLP_token.ff.0.bias": (t_inter,),
            f"{prefix}MLP_token.ff.3.weight": (t, t_inter), f"{prefix}MLP_token.ff.3.bias": (t,),
            f"{prefix}layernorm2.weight": (h,), f"{prefix}layernorm2.bias": (h,),
            f"{prefix}MLP_channel.ff.0.weight": (h_inter, h), f"{prefix}MLP_channel.ff.0.bias": (h_inter,),
            f"{prefix}MLP_channel.ff.3.weight": (h, h_inter), f"{prefix}MLP_channel.ff.3.bias": (h,)}


def _bn_keys(prefix: str, c: int) -> dict[str, tuple]:
    return {f"{prefix}.{n}": (c,) for n in ("weight", "bias", "running_mean", "running_var")} | {
        f"{prefix}.num_batches_tracked": ()}


def official_shapes(c_sw: int, guided: bool, d: dict = SMALL, head: bool = True) -> dict[str, tuple]:
    """§3.9 key names with the shapes of §3.3 / §3.4 (Linear weights (out, in)), at the dimensions ``d``."""
    M, D, V, H = d["token_num"], d["token_dim"], d["codebook_size"], d["enc_hidden_dim"]
    t = "keypoint_head.tokenizer."
    shapes = {f"{t}invisible_token": (1, 1, H)}
    if guided:
        shapes |= {f"{t}start_embed.weight": (H // 2, 2), f"{t}start_embed.bias": (H // 2,),
                   f"{t}start_img_embed.weight": (H // 2, c_sw), f"{t}start_img_embed.bias": (H // 2,)}
    else:
        shapes |= {f"{t}start_embed.weight": (H, 2), f"{t}start_embed.bias": (H,)}
    for i in range(d["enc_num_blocks"]):
        shapes |= _mixer_keys(f"{t}encoder.{i}.", H, K, d["enc_token_inter_dim"], d["enc_hidden_inter_dim"])
    dh = d["dec_hidden_dim"]
    shapes |= {f"{t}encoder_layer_norm.weight": (H,), f"{t}encoder_layer_norm.bias": (H,),
               f"{t}token_mlp.weight": (M, K), f"{t}token_mlp.bias": (M,),
               f"{t}feature_embed.weight": (D, H), f"{t}feature_embed.bias": (D,),
               f"{t}codebook": (V, D), f"{t}ema_cluster_size": (V,), f"{t}ema_w": (V, D),
               f"{t}decoder_token_mlp.weight": (K, M), f"{t}decoder_token_mlp.bias": (K,),
               f"{t}decoder_start.weight": (dh, D), f"{t}decoder_start.bias": (dh,)}
    shapes |= _mixer_keys(f"{t}decoder.0.", dh, K, d["dec_token_inter_dim"], d["dec_hidden_inter_dim"])
    shapes |= {f"{t}decoder_layer_norm.weight": (dh,), f"{t}decoder_layer_norm.bias": (dh,),
               f"{t}recover_embed.weight": (2, dh), f"{t}recover_embed.bias": (2,)}
    if not head:
        return shapes
    c, hd, p = d["conv_channels"], d["head_hidden_dim"], "keypoint_head."
    shapes |= {f"{p}conv_trans.0.weight": (c, c_sw, 1, 1)} | _bn_keys(f"{p}conv_trans.1", c)
    for b in range(2):
        for n in (1, 2):
            shapes |= {f"{p}conv_head.0.{b}.conv{n}.weight": (c, c, 3, 3)}
            shapes |= _bn_keys(f"{p}conv_head.0.{b}.bn{n}", c)
    shapes |= {f"{p}mixer_trans.ff.0.weight": (M * hd, c * 4 * 4), f"{p}mixer_trans.ff.0.bias": (M * hd,),
               f"{p}mixer_trans.ff.1.weight": (M * hd,), f"{p}mixer_trans.ff.1.bias": (M * hd,)}
    for i in range(d["head_num_blocks"]):
        shapes |= _mixer_keys(f"{p}mixer_head.{i}.", hd, M, d["head_token_inter_dim"],
                              d["head_hidden_inter_dim"])
    shapes |= {f"{p}mixer_norm_layer.ff.0.weight": (hd, hd), f"{p}mixer_norm_layer.ff.0.bias": (hd,),
               f"{p}mixer_norm_layer.ff.1.weight": (hd,), f"{p}mixer_norm_layer.ff.1.bias": (hd,),
               f"{p}cls_pred_layer.weight": (V, hd), f"{p}cls_pred_layer.bias": (V,)}
    return shapes


def official_fixture(c_sw: int, guided: bool, seed: int = 0, head: bool = True) -> dict[str, torch.Tensor]:
    """Non-trivial tensors for the documented keys: N(0, 0.3) (coordinate embeddings N(0, 0.02): inputs are
    pixels), LayerNorm / BatchNorm scales around 1, BN variances positive, codebook N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in official_shapes(c_sw, guided, head=head).items():
        x = torch.randn(shape, generator=g)
        if key.endswith("num_batches_tracked"):
            x = torch.tensor(7)
        elif key.endswith("running_var"):
            x = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith("weight") and any(n in key for n in ("norm", ".bn", "conv_trans.1", "ff.1.")):
            x = 1.0 + 0.2 * x
        elif "start_embed" in key:
            x = 0.02 * x
        elif not key.endswith(("codebook", "ema_w", "ema_cluster_size")):
            x = 0.3 * x
        if key.endswith("ema_cluster_size"):
            x = x.abs()
        out[key] = x
    return out


# -- an independent forward written from the brief: plain tensor algebra, loops over joints and tokens -------
def lin(x, sd, name):
    return x @ sd[name + ".weight"].t() + sd[name + ".bias"]


def layer_norm(x, sd, name, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * sd[name + ".weight"] + sd[name + ".bias"]


def gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def mixer(x, sd, p):
    y = layer_norm(x, sd, p + "layernorm1").transpose(1, 2)
    y = lin(gelu(lin(y, sd, p + "MLP_token.ff.0")), sd, p + "MLP_token.ff.3").transpose(1, 2)
    z = lin(gelu(lin(layer_norm(x + y, sd, p + "layernorm2"), sd, p + "MLP_channel.ff.0")), sd,
            p + "MLP_channel.ff.3")
    return x + y + z


def ref_encode_quantize(sd, joints, feats, guided):
    t = "keypoint_head.tokenizer."
    b = joints.shape[0]
    rows = []
    for i in range(b):
        per_joint = []
        for k in range(K):
            x, y, v = (float(u) for u in joints[i, k])
            f = lin(joints[i, k, :2], sd, t + "start_embed")
            if guided:
                side = feats.shape[-1]
                stride = S / side
                ix, iy = (min(max(int(c / stride + 0.5), 0, ), side - 1) for c in (x, y))
                f = torch.cat([f, lin(feats[i, :, iy, ix], sd, t + "start_img_embed")])
            per_joint.append(f if v > 0 else sd[t + "invisible_token"].reshape(-1))
        rows.append(torch.stack(per_joint))
    h = torch.stack(rows)
    for i in range(SMALL["enc_num_blocks"]):
        h = mixer(h, sd, f"{t}encoder.{i}.")
    h = layer_norm(h, sd, t + "encoder_layer_norm")
    h = lin(h.transpose(1, 2), sd, t + "token_mlp").transpose(1, 2)
    z = lin(h, sd, t + "feature_embed")
    E = sd[t + "codebook"]
    idx = torch.tensor([[min(range(len(E)), key=lambda j, r=z[i, m]: float(((r - E[j]) ** 2).sum()))
                         for m in range(z.shape[1])] for i in range(b)])
    return z, idx


def ref_decode(sd, tokens):
    t = "keypoint_head.tokenizer."
    x = lin(tokens.transpose(1, 2), sd, t + "decoder_token_mlp").transpose(1, 2)
    x = lin(x, sd, t + "decoder_start")
    x = mixer(x, sd, t + "decoder.0.")
    return lin(layer_norm(x, sd, t + "decoder_layer_norm"), sd, t + "recover_embed")


def ref_head(sd, feats):
    p = "keypoint_head."

    def bn(x, name):
        sh = (1, -1, 1, 1)
        mean, var = sd[name + ".running_mean"].view(sh), sd[name + ".running_var"].view(sh)
        scale, shift = sd[name + ".weight"].view(sh), sd[name + ".bias"].view(sh)
        return (x - mean) / torch.sqrt(var + 1e-5) * scale + shift

    x = torch.einsum("bchw,oc->bohw", feats, sd[p + "conv_trans.0.weight"][:, :, 0, 0])
    x = torch.relu(bn(x, p + "conv_trans.1"))
    for b in range(2):
        q = f"{p}conv_head.0.{b}."
        y = torch.relu(bn(F.conv2d(x, sd[q + "conv1.weight"], padding=1), q + "bn1"))
        x = torch.relu(x + bn(F.conv2d(y, sd[q + "conv2.weight"], padding=1), q + "bn2"))
    h, w = x.shape[-2:]
    flat = torch.cat([x[:, :, i, j] for i in range(h) for j in range(w)], dim=1)  # (h, w, c) order
    M, hd = SMALL["token_num"], SMALL["head_hidden_dim"]
    y = torch.relu(layer_norm(lin(flat, sd, p + "mixer_trans.ff.0"), sd, p + "mixer_trans.ff.1"))
    y = y.view(-1, M, hd)
    for i in range(SMALL["head_num_blocks"]):
        y = mixer(y, sd, f"{p}mixer_head.{i}.")
    y = torch.relu(layer_norm(lin(y, sd, p + "mixer_norm_layer.ff.0"), sd, p + "mixer_norm_layer.ff.1"))
    return lin(y, sd, p + "cls_pred_layer")


@pytest.fixture(scope="module")
def guided_classifier_fixture(tmp_path_factory):
    """An official-layout stage-II checkpoint: the hand-written ``keypoint_head.*`` tensors plus the tiny PCT
    Swin as ``backbone.*`` and ``extra_backbone.*`` (one trunk in both roles)."""
    method = method_for("classifier", "image")
    swin = {k.removeprefix("backbone.backbone."): v for k, v in method.state_dict().items()
            if k.startswith("backbone.backbone.")}
    state = official_fixture(256, guided=True) | {f"backbone.{k}": v for k, v in swin.items()}
    state |= {f"extra_backbone.{k}": v.clone() for k, v in swin.items()}
    path = tmp_path_factory.mktemp("official") / "pct_tiny_official.pth"
    torch.save({"meta": {}, "state_dict": state}, path)
    return path, state


def test_official_classifier_matches_reference_and_exports_back(guided_classifier_fixture, tmp_path):
    path, state = guided_classifier_fixture
    method = method_for("classifier", "image")
    load_method_weights(method, path)
    method.eval()
    torch.manual_seed(3)
    images = torch.randn(2, 3, S, S)
    joints = random_joints(2, seed=4)
    feats = method.features(images)
    assert feats.shape == (2, 256, 4, 4)
    with torch.no_grad():
        # tokenizer: sampled image features, masking by visibility, Mixer encoder, VQ, decoder
        out = method.tokenizer(joints, feats)
        z_ref, idx_ref = ref_encode_quantize(state, joints, feats, guided=True)
        torch.testing.assert_close(out["z"], z_ref, rtol=1e-4, atol=1e-4)
        assert torch.equal(out["indices"], idx_ref)
        E = state["keypoint_head.tokenizer.codebook"]
        torch.testing.assert_close(out["joints"], ref_decode(state, E[idx_ref]), rtol=1e-4, atol=1e-4)
        # head logits, and the prediction: soft decoding, score = mean top-1 logit
        logits = ref_head(state, feats)
        torch.testing.assert_close(method.head(feats), logits, rtol=1e-4, atol=1e-4)
        kp, score = method.predict(images, flip_test=False)
        torch.testing.assert_close(kp, ref_decode(state, logits.softmax(-1) @ E), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(score, logits.max(-1).values.mean(-1, keepdim=True).expand(-1, K))
    # and back to the official layout, tensor for tensor
    exported = torch.load(export_official(method, tmp_path / "back.pth"), weights_only=True)["state_dict"]
    assert exported.keys() == state.keys()
    assert all(torch.equal(exported[k], state[k]) for k in state)


def test_official_woimgguide_tokenizer_matches_reference(tmp_path):
    state = official_fixture(0, guided=False, seed=5, head=False)
    path = tmp_path / "tokenizer.pth"
    torch.save({"state_dict": state}, path)
    method = method_for("tokenizer", "none")
    load_method_weights(method, path)
    joints = random_joints(3, seed=6)
    with torch.no_grad():
        out = method.eval().tokenizer(joints)
    z_ref, idx_ref = ref_encode_quantize(state, joints, None, guided=False)
    torch.testing.assert_close(out["z"], z_ref, rtol=1e-4, atol=1e-4)
    assert torch.equal(out["indices"], idx_ref)
    ref = ref_decode(state, state["keypoint_head.tokenizer.codebook"][idx_ref])
    torch.testing.assert_close(out["joints"], ref, rtol=1e-4, atol=1e-4)
    # the same file initialises a classifier's tokenizer (only the keypoint_head.tokenizer. keys, strict)
    tok = small_tokenizer()
    load_tokenizer_weights(tok, path)
    assert torch.equal(tok.codebook, state["keypoint_head.tokenizer.codebook"])


def test_official_backbone_copies_must_agree(guided_classifier_fixture, tmp_path):
    _, state = guided_classifier_fixture
    bad = dict(state)
    key = next(k for k in bad if k.startswith("extra_backbone.") and bad[k].is_floating_point())
    bad[key] = bad[key] + 1.0
    torch.save({"state_dict": bad}, tmp_path / "bad.pth")
    with pytest.raises(DataError, match=key.replace(".", r"\.")):
        load_method_weights(method_for("classifier", "image"), tmp_path / "bad.pth")
    # the Swin buffers derived from the window sizes may be absent; a missing weight may not
    derived = {k: v for k, v in state.items()
               if not k.endswith(("relative_coords_table", "relative_position_index"))}
    assert len(derived) < len(state)
    torch.save({"state_dict": derived}, tmp_path / "derived.pth")
    load_method_weights(method_for("classifier", "image"), tmp_path / "derived.pth")
    del derived["keypoint_head.cls_pred_layer.bias"]
    torch.save({"state_dict": derived}, tmp_path / "missing.pth")
    with pytest.raises(DataError, match=r"missing keys keypoint_head\.cls_pred_layer\.bias"):
        load_method_weights(method_for("classifier", "image"), tmp_path / "missing.pth")


@pytest.mark.parametrize("change, key, shapes", [
    ({"token_num": 7}, "token_mlp.weight", ("(7, 17)", "(6, 17)")),
    ({"token_class_num": 12}, "codebook", ("(12, 8)", "(16, 8)")),
    ({"num_joints": 14}, "encoder.0.MLP_token.ff.0.weight", ("(5, 14)", "(5, 17)")),
])
@pytest.mark.parametrize("layout", ["ours", "official"])
def test_tokenizer_checkpoint_of_another_shape_names_key_and_shapes(tmp_path, change, key, shapes, layout):
    other = small_tokenizer(**change)
    prefix = "tokenizer." if layout == "ours" else "keypoint_head.tokenizer."
    path = tmp_path / "tok.pth"
    torch.save({"state_dict": {prefix + k: v for k, v in other.state_dict().items()}}, path)
    with pytest.raises(DataError) as err:
        load_tokenizer_weights(small_tokenizer(), path)
    msg = str(err.value)
    assert f"field {prefix}{key}:" in msg and shapes[0] in msg and shapes[1] in msg and str(path) in msg


def test_our_checkpoint_round_trip(tmp_path):
    from humanvision.engine import save_checkpoint

    a = method_for("classifier", "none")
    for p in a.head.parameters():
        torch.nn.init.normal_(p)
    save_checkpoint(tmp_path / "run" / "last", a.state_dict())
    b = method_for("classifier", "none", tokenizer_weights=tmp_path / "run")
    load_method_weights(b, tmp_path / "run")
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    load_tokenizer_weights(small_tokenizer(), tmp_path / "run")  # a classifier run also holds its tokenizer


# --------------------------------------------------------------------------------------------- inference
def test_flip_averaged_prediction():
    method = method_for("classifier", "none").eval()
    for p in method.head.parameters():  # O(1) logits instead of the N(0, 0.001) conv init
        torch.nn.init.normal_(p, std=0.3)
    torch.manual_seed(0)
    images = torch.randn(2, 3, S, S)
    kp, score = method.predict(images, flip_test=True)
    kp0, s0 = method.predict(images, flip_test=False)
    kp1, s1 = method.predict(images.flip(-1), flip_test=False)
    torch.testing.assert_close(kp, 0.5 * (kp0 + flip_joints(kp1, S, FLIP)))
    torch.testing.assert_close(score, 0.5 * (s0 + s1))
    assert not torch.allclose(kp0, flip_joints(kp1, S, FLIP), atol=1e-2)  # the average is not trivial
    assert (score == score[:, :1]).all()  # one pose score broadcast to the joints
    # the flip-averaged prediction is mirror-equivariant: predicting the mirrored crop gives the mirrored pose
    kp_m, score_m = method.predict(images.flip(-1), flip_test=True)
    torch.testing.assert_close(kp_m, flip_joints(kp, S, FLIP), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(score_m, score)


def test_stage_two_loss_trains_the_head_only():
    method = method_for("classifier", "image").train()
    batch = {"image": torch.randn(2, 3, S, S), "joints": random_joints(2)}
    out = method(batch)
    assert set(out) == {"loss", "cls_loss", "joint_loss", "top1_acc", "top2_acc", "top5_acc"}
    torch.testing.assert_close(out["loss"], out["cls_loss"] + out["joint_loss"])
    out["loss"].backward()
    assert all(p.grad is not None for p in method.head.parameters())
    assert all(p.grad is None for p in method.tokenizer.parameters())
    assert all(p.grad is None for p in method.backbone.parameters())
    # the joint term alone reaches the head through the frozen decoder (soft decoding)
    method.zero_grad()
    method.cls_loss_weight = 0.0
    method(batch)["loss"].backward()
    assert method.head.cls_pred_layer.weight.grad.abs().sum() > 0


def test_pooled_features_of_a_cnn_pyramid_backbone():
    """pct.feature_size average-pools a fine map (lateral_tiny: 64 x 32 x 32 at 128) for the head and the image
    guidance; the head's first Linear then reads 4 x 4 x 8 values."""
    torch.manual_seed(0)
    method = build_method(PCTRecipe(pct=pct_config("classifier", "image", backbone="lateral_tiny",
                                                   feature_size=4)), pretrained=False).train()
    images = torch.randn(2, 3, S, S)
    fine = method.backbone.forward_features(images)
    assert fine.shape == (2, 64, 32, 32)
    torch.testing.assert_close(method.features(images), fine.reshape(2, 64, 4, 8, 4, 8).mean((3, 5)))
    assert method.head.mixer_trans.ff[0].in_features == 4 * 4 * 8
    out = method({"image": images, "joints": random_joints(2)})
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and all(p.grad is not None for p in method.head.parameters())
    with pytest.raises(ConfigError, match="pct.feature_size"):
        pct_config(feature_size=0)


# ------------------------------------------------------------------------------------------------ recipes
def test_recipe_validation(tmp_path):
    with pytest.raises(ConfigError, match="pct.tokenizer_weights"):
        load_recipe({"pct": {"stage": "classifier"}})
    with pytest.raises(ConfigError, match="pct.backbone"):
        load_recipe({"pct": {"backbone": "pct_swin_bse_hmp"}})
    with pytest.raises(ConfigError, match="pct.codebook_sze"):
        load_recipe({"pct": {"codebook_sze": 3}})
    with pytest.raises(ConfigError, match="pct.tokenizer_weights: file not found"):
        load_recipe({"pct": {"stage": "classifier", "tokenizer_weights": str(tmp_path / "nope")}})
    with pytest.raises(ConfigError, match="data.source"):
        load_recipe({"pct": {}, "data": {"source": "mpii"}})
    recipe = load_recipe({"pct": {"stage": "classifier", "tokenizer_weights": str(tmp_path / "nope")}},
                         unchecked=("model.weights",))  # eval / infer: --weights replace both weight paths
    assert recipe.data.augment == "pct" and recipe.pct.test_padding == 1.12 and recipe.pct.input_size == 256
    assert is_pct_recipe(recipe) and is_pct_recipe(CONFIGS / "pct_tiny_tokenizer_synthetic.yaml")
    assert not is_pct_recipe(CONFIGS / "synthetic_tiny.yaml") and not is_pct_recipe(tmp_path / "missing.yaml")


PCT_CONFIGS = sorted(p for p in CONFIGS.glob("pct_*.yaml") if "hmp" not in p.name)


def test_pct_recipes_are_in_the_repository():
    names = {p.name for p in PCT_CONFIGS}
    expected = {f"pct_{s}_{stage}.yaml" for s in ("base", "large", "huge")
                for stage in ("tokenizer", "classifier")}
    assert expected | {"pct_tiny_tokenizer_synthetic.yaml", "pct_tiny_classifier_synthetic.yaml"} <= names


@pytest.mark.parametrize("path", PCT_CONFIGS, ids=lambda p: p.name)
def test_pct_config_loads_and_builds(path):
    """Every PCT recipe validates and builds (meta device); the published schedules (§3.3, §3.4)."""
    recipe = load_recipe(path, unchecked=("data.", "pct."))
    with torch.device("meta"):
        method = build_method(recipe, pretrained=False)
    assert isinstance(method, PCTTokenizerStage if recipe.pct.stage == "tokenizer" else PCTClassifierStage)
    assert method.guided == (recipe.pct.guide == "image")
    t = recipe.train
    assert (t.optimizer, t.schedule, t.min_lr_ratio) == ("adamw", "cosine", 1e-5)
    if "tiny" in path.name:
        return
    data = yaml.safe_load(path.read_text())
    assert data["pct"]["input_size"] == 256
    assert recipe.pct.test_padding == 1.12 and recipe.data.padding == 1.25
    assert (t.warmup_iters, t.warmup_ratio) == (500, 0.001)
    if recipe.pct.stage == "tokenizer":
        assert (t.lr, t.weight_decay, t.epochs, t.batch_size, t.precision) == (1e-2, 0.15, 50, 64, "fp32")
        assert (recipe.pct.token_num, recipe.pct.codebook_size, recipe.pct.drop_rate) == (34, 2048, 0.2)
    else:
        assert (t.lr, t.weight_decay, t.epochs, t.batch_size, t.precision) == (8e-4, 0.05, 210, 32, "fp16")
        assert recipe.pct.tokenizer_weights is not None
