"""HAP downstream re-id and attributes (pretraining.md B.9.1, B.9.5): model shapes, the batch-hard soft-margin
triplet loss and the weighted BCE against formulas written out here, the P x K identity sampler's contract, the
layer-decay scales, loading a resampled encoder, tiny training runs through the engine on fixture folders in the
official layouts (read by the readers), and the re-id evaluation against ``evaluate_reid`` called directly.

Tiny ViTs (depth 2, 64x32 crops) throughout; the whole file runs in well under a minute on one CPU thread.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from humanvision.data.io import write_image
from humanvision.engine import read_log
from humanvision.engine.optim import param_groups
from humanvision.errors import ConfigError, DataError
from humanvision.methods import attributes as attr
from humanvision.methods import reid
from humanvision.models import create_model
from humanvision.models.person_vit import AttributeViT, ReIDViT, load_encoder_state

torch.set_num_threads(1)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SMALL = {"depth": 2}
SIZE = (64, 32)  # (height, width)


# ------------------------------------------------------------------------------------------------ fixtures
def _person(rng: np.random.Generator, color: np.ndarray) -> np.ndarray:
    img = np.clip(color + rng.normal(0, 12, (48, 24, 3)), 0, 255).astype(np.uint8)
    img[:8] = 255 - img[:8]  # a "head" band
    return img


def write_market(root: Path, train_ids: int = 6, test_ids: int = 3, per_id: int = 4, seed: int = 0) -> Path:
    """A Market-1501-layout folder: ``{pid:04d}_c{cam}s1_{frame:06d}_00.jpg``; per test id one query (camera 1)
    and gallery shots from cameras 1-3, a distractor (pid 0) and a junk image (pid -1)."""
    rng = np.random.default_rng(seed)
    colors = rng.uniform(30, 220, (train_ids + test_ids, 3))
    frame = 0
    for i in range(train_ids):
        for k in range(per_id if i else 2):  # id 1 has only 2 images (< K)
            frame += 1
            write_image(root / "bounding_box_train" / f"{i + 1:04d}_c{k % 3 + 1}s1_{frame:06d}_00.jpg",
                        _person(rng, colors[i]))
    for j in range(test_ids):
        pid, c = 100 + j, colors[train_ids + j]
        frame += 1
        write_image(root / "query" / f"{pid:04d}_c1s1_{frame:06d}_00.jpg", _person(rng, c))
        for cam in (1, 2, 3):
            frame += 1
            write_image(root / "bounding_box_test" / f"{pid:04d}_c{cam}s1_{frame:06d}_00.jpg", _person(rng, c))
    write_image(root / "bounding_box_test" / "0000_c2s1_000900_00.jpg", _person(rng, np.full(3, 128.0)))
    write_image(root / "bounding_box_test" / "-1_c3s1_000901_00.jpg", _person(rng, np.full(3, 60.0)))
    return root


ATTRS = ["Female", "Hat", "Backpack"]


def write_pa100k(root: Path, n: tuple[int, int, int] = (16, 4, 8), seed: int = 0) -> Path:
    """A PA-100K-layout folder: ``annotation.mat`` (the released variable names) + ``data/``."""
    import scipy.io

    rng = np.random.default_rng(seed)
    mat: dict = {"attributes": np.array(ATTRS, dtype=object).reshape(-1, 1)}
    count = 0
    for split, num in zip(("train", "val", "test"), n, strict=True):
        labels = (rng.random((num, len(ATTRS))) < [0.5, 0.2, 0.7]).astype(np.uint8)
        names = []
        for row in labels:
            count += 1
            name = f"{count:06d}.jpg"
            write_image(root / "data" / name, _person(rng, 40 + 150 * row.astype(float)))
            names.append(name)
        mat[f"{split}_images_name"] = np.array(names, dtype=object).reshape(-1, 1)
        mat[f"{split}_label"] = labels
    scipy.io.savemat(root / "annotation.mat", mat)
    return root


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    return write_market(tmp_path_factory.mktemp("market"))


@pytest.fixture(scope="module")
def pa100k(tmp_path_factory) -> Path:
    return write_pa100k(tmp_path_factory.mktemp("pa100k"))


def reid_recipe(root: Path, out: Path, **train) -> reid.ReIDRecipe:
    return reid.load_recipe({
        "reid": {"num_instances": 4},
        "model": {"name": "reid_vit_tiny_patch16", "img_size": list(SIZE), "args": SMALL},
        "data": {"source": "market1501", "root": str(root)},
        "train": {"epochs": 1, "batch_size": 8, "lr": 1e-3, "layer_decay": 0.4, "warmup_epochs": 0.5,
                  "precision": "fp32", "channels_last": False, "device": "cpu", "output_dir": str(out),
                  "progress": False, "tensorboard": False, "log_every": 1, **train},
        "eval": {"batch_size": 16, "num_vis": 2, "topk": 3}})


# --------------------------------------------------------------------------------------------------- models
def test_model_shapes():
    m = create_model("reid_vit_tiny_patch16", num_classes=5, img_size=SIZE, **SMALL)
    assert isinstance(m, ReIDViT) and m.grid_size == (4, 2) and isinstance(m.neck, torch.nn.Identity)
    out = m(torch.randn(3, 3, *SIZE))
    assert [tuple(f.shape) for f in out["features"]] == [(3, 192)]
    assert [tuple(x.shape) for x in out["logits"]] == [(3, 5)] and out["embedding"].shape == (3, 192)

    lem = create_model("reid_vit_tiny_patch16", num_classes=5, img_size=SIZE, lem=True, **SMALL)
    out = lem(torch.randn(3, 3, *SIZE))
    assert [tuple(f.shape) for f in out["features"]] == [(3, 192), (3, 384)]
    assert [tuple(x.shape) for x in out["logits"]] == [(3, 5), (3, 5)] and out["embedding"].shape == (3, 576)
    assert isinstance(lem.neck, torch.nn.BatchNorm1d) and not lem.neck.bias.requires_grad  # BNNeck with lem

    a = create_model("attr_vit_tiny_patch16", num_classes=7, img_size=(64, 48), **SMALL)
    assert isinstance(a, AttributeViT) and a(torch.randn(2, 3, 64, 48)).shape == (2, 7)
    # the published sizes (meta device: no memory, no init cost)
    with torch.device("meta"):
        b = create_model("reid_vit_base_patch16", num_classes=751)
        bl = create_model("reid_vit_base_patch16", num_classes=1041, img_size=(384, 128), lem=True)
        ab = create_model("attr_vit_base_patch16", num_classes=26)
    assert b.backbone.pos_embed.shape == (1, 129, 768) and b.head.weight.shape == (751, 768)
    assert b.backbone.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1) and b.backbone.norm.eps == 1e-6
    assert bl.grid_size == (24, 8) and bl.embed_dim_out == 2304 and bl.conv_head.weight.shape == (1041, 1536)
    assert ab.grid_size == (16, 12) and ab.head.weight.shape == (26, 768)


def test_heads_read_the_right_tokens():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 48)
    a = create_model("attr_vit_tiny_patch16", num_classes=4, img_size=(64, 48), **SMALL).eval()
    tokens = a.forward_tokens(x)
    torch.testing.assert_close(a(x), a.head(tokens[:, 1:].mean(1)))  # patch mean, CLS ignored
    r = create_model("reid_vit_tiny_patch16", num_classes=4, img_size=(64, 48), **SMALL).eval()
    torch.testing.assert_close(r(x)["embedding"], r.forward_tokens(x)[:, 0])  # CLS after the final LN
    torch.testing.assert_close(r.forward_tokens(x)[:, 0], r.backbone.forward_head(r.backbone.forward_features(x)))


# --------------------------------------------------------------------------------------------------- losses
def test_triplet_loss_equals_brute_force():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(12, 6, generator=g, requires_grad=True)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    loss = reid.batch_hard_triplet_loss(feats, labels)
    f = feats.detach().double().numpy()
    terms = []
    for i in range(12):
        pos = [np.linalg.norm(f[i] - f[j]) for j in range(12) if labels[j] == labels[i]]
        neg = [np.linalg.norm(f[i] - f[j]) for j in range(12) if labels[j] != labels[i]]
        terms.append(math.log1p(math.exp(max(pos) - min(neg))))
    assert loss.item() == pytest.approx(float(np.mean(terms)), rel=1e-5)
    loss.backward()
    assert torch.isfinite(feats.grad).all()
    # torch's own SoftMarginLoss on the mined distances agrees
    d = torch.cdist(feats.detach(), feats.detach())
    same = labels[:, None] == labels[None]
    ap, an = d.masked_fill(~same, -1).max(1).values, d.masked_fill(same, 1e9).min(1).values
    assert loss.item() == pytest.approx(F.soft_margin_loss(an - ap, torch.ones(12)).item(), rel=1e-5)


def test_weighted_bce_equals_formula():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 4, generator=g)
    y = (torch.rand(5, 4, generator=g) > 0.5).float()
    r = torch.tensor([0.1, 0.5, 0.9, 0.3])
    p = torch.sigmoid(logits).double().numpy()
    yy, rr = y.double().numpy(), r.double().numpy()
    w = np.where(yy == 1, np.exp(1 - rr), np.exp(rr))
    expected = (-(yy * np.log(p) + (1 - yy) * np.log(1 - p)) * w).sum(1).mean()
    assert attr.weighted_bce_loss(logits, y, r).item() == pytest.approx(expected, rel=1e-5)
    plain = (-(yy * np.log(p) + (1 - yy) * np.log(1 - p))).sum(1).mean()
    assert attr.weighted_bce_loss(logits, y).item() == pytest.approx(plain, rel=1e-5)


# -------------------------------------------------------------------------------------------------- sampler
LABELS = np.repeat(np.arange(7), [1, 3, 4, 5, 8, 9, 2])  # ids 0, 1, 6 have fewer than K = 4 images


def _batches(sampler, size):
    items = list(sampler)
    idx = np.array([i for i, _ in items])
    assert len(items) == len(sampler) and len(idx) % size == 0
    return idx.reshape(-1, size), np.array([s for _, s in items])


def test_identity_sampler_pk_batches_and_determinism():
    s = reid.RandomIdentitySampler(LABELS, batch_size=8, num_instances=4, seed=3)
    chunks = sum(max(n, 4) // 4 for n in np.bincount(LABELS))
    assert s.num_batches == chunks // 2 and s.num_samples == s.num_batches * 8
    batches, seeds = _batches(s, 8)
    for b in batches:
        ids, counts = np.unique(LABELS[b], return_counts=True)
        assert len(ids) == 2 and (counts == 4).all()  # P = 2 ids x exactly K = 4
        for i in ids:
            members = b[LABELS[b] == i]
            if np.sum(LABELS == i) >= 4:
                assert len(set(members)) == 4  # without replacement when the id has enough images
    assert len(set(seeds.tolist())) == len(seeds)  # an image drawn twice is augmented twice differently
    # many epochs: every id, including those with < K images, is drawn; ids with 1 image repeat it K times
    seen = np.concatenate([_batches(_at(s, e), 8)[0].ravel() for e in range(20)])
    assert set(LABELS[seen]) == set(range(7)) and (seen[LABELS[seen] == 0] == 0).all()

    again = reid.RandomIdentitySampler(LABELS, batch_size=8, num_instances=4, seed=3)
    assert list(again) == list(_at(s, 0))  # same (seed, epoch) -> same order
    assert [i for i, _ in _at(s, 1)] != [i for i, _ in _at(s, 0)]  # a new epoch, another order
    other = reid.RandomIdentitySampler(LABELS, batch_size=8, num_instances=4, seed=4)
    assert [i for i, _ in other] != [i for i, _ in _at(s, 0)]
    # resume mid-epoch: set_epoch(start) skips exactly the first `start` samples
    full = list(_at(s, 2))
    s.set_epoch(2, start=8)
    assert list(s) == full[8:] and len(s) == len(full) - 8


def _at(sampler, epoch):
    sampler.set_epoch(epoch)
    return sampler


def test_identity_sampler_ddp_shards_whole_identities():
    one = reid.RandomIdentitySampler(LABELS, batch_size=8, num_instances=4, seed=0)
    ranks = [reid.RandomIdentitySampler(LABELS, batch_size=4, num_instances=4, seed=0, rank=r, world_size=2)
             for r in range(2)]
    single, _ = _batches(_at(one, 1), 8)
    parts = [_batches(_at(r, 1), 4)[0] for r in ranks]
    assert all(r.num_samples == one.num_samples // 2 for r in ranks)
    for k, b in enumerate(single):
        assert sorted(np.concatenate([parts[0][k], parts[1][k]]).tolist()) == sorted(b.tolist())
        assert all(len(set(LABELS[p[k]])) == 1 for p in parts)  # each rank: 1 id x K
    with pytest.raises(ConfigError, match="multiple of"):
        reid.RandomIdentitySampler(LABELS, batch_size=6, num_instances=4)
    with pytest.raises(ConfigError, match="at least 8 identities"):
        reid.RandomIdentitySampler(LABELS, batch_size=32, num_instances=4)


# ------------------------------------------------------------------------------------------ optimisation
def test_layer_decay_scales():
    model = create_model("reid_vit_tiny_patch16", num_classes=5, img_size=SIZE)  # 12 blocks: 13 = head
    method = reid.ReIDMethod(model)
    groups = param_groups(method, 0.05, 0.4)
    layer_of = {n: g["layer_id"] for g in groups for n in g["param_names"]}
    for g in groups:
        assert g["lr_scale"] == pytest.approx(0.4 ** (13 - g["layer_id"]))
    assert layer_of["model.backbone.cls_token"] == 0 and layer_of["model.backbone.pos_embed"] == 0
    assert layer_of["model.backbone.patch_embed.proj.weight"] == 0
    assert layer_of["model.backbone.blocks.0.attn.qkv.weight"] == 1
    assert layer_of["model.backbone.blocks.11.mlp.fc2.weight"] == 12
    assert layer_of["model.backbone.norm.weight"] == 13 and layer_of["model.head.weight"] == 13
    decay = {n: g["weight_decay"] for g in groups for n in g["param_names"]}
    assert decay["model.backbone.pos_embed"] == 0 and decay["model.backbone.cls_token"] == 0
    assert decay["model.head.bias"] == 0 and decay["model.head.weight"] == 0.05


# --------------------------------------------------------------------------------------------- augmentation
def test_person_transform_and_erasing():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (50, 30, 3), dtype=np.uint8)
    test = reid.person_transform(img, (64, 32))
    assert test.shape == (3, 64, 32)
    flipped = reid.person_transform(img, (64, 32), np.random.default_rng(1), flip_prob=1.0, pad=0)
    torch.testing.assert_close(flipped, test.flip(-1))
    shifted = reid.person_transform(img, (64, 32), np.random.default_rng(2), flip_prob=0.0, pad=10)
    assert shifted.shape == (3, 64, 32)
    x = np.zeros((3, 64, 32), np.float32)
    reid.random_erasing(x, np.random.default_rng(3), prob=1.0)
    rows, cols = np.nonzero((x != 0).any(0))
    area = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert 0.02 * 64 * 32 * 0.8 <= area <= 64 * 32 / 3 * 1.2 and (x != 0).any(0).sum() == area  # one rectangle
    y = np.zeros((3, 64, 32), np.float32)
    assert not reid.random_erasing(y, np.random.default_rng(3), prob=0.0).any()


# ---------------------------------------------------------------------------------------- loading weights
def test_load_encoder_with_resampled_pos_embed(tmp_path):
    from timm.layers import resample_abs_pos_embed

    pytest.importorskip("humanvision.models.mae")
    torch.manual_seed(0)
    src = create_model("reid_vit_tiny_patch16", num_classes=3, img_size=(256, 128), **SMALL)
    enc = src.backbone.state_dict()
    hap = {**enc, "mask_token": torch.zeros(1, 1, 32), "decoder_embed.weight": torch.zeros(32, 192),
           "decoder_pos_embed": torch.zeros(1, 129, 32)}
    path = tmp_path / "hap.pth"
    torch.save({"epoch": 399, "arch": "pose_mae_vit_tiny_patch16", "model": hap}, path)

    recipe = reid.load_recipe({"reid": {}, "model": {"name": "reid_vit_tiny_patch16", "img_size": [384, 128],
                                                     "init": str(path), "args": SMALL},
                               "data": {"source": "synthetic"}, "train": {"batch_size": 64}})
    torch.manual_seed(1)
    method = reid.build_method(recipe, num_classes=7)
    got = method.model.backbone.state_dict()
    want = resample_abs_pos_embed(enc["pos_embed"], new_size=[24, 8], old_size=[16, 8], num_prefix_tokens=1,
                                  interpolation="bicubic", antialias=False)
    assert got["pos_embed"].shape == (1, 1 + 24 * 8, 192)
    torch.testing.assert_close(got["pos_embed"], want)
    torch.testing.assert_close(got["pos_embed"][:, 0], enc["pos_embed"][:, 0])
    for k in ("cls_token", "patch_embed.proj.weight", "blocks.1.mlp.fc2.weight", "norm.weight"):
        torch.testing.assert_close(got[k], enc[k])
    assert method.model.head.weight.shape == (7, 192)  # the head is the task's own

    # the strict loader: a pos_embed of another grid and foreign keys are errors naming the key
    model = create_model("reid_vit_tiny_patch16", num_classes=3, img_size=(384, 128), **SMALL)
    with pytest.raises(DataError, match="pos_embed"):
        load_encoder_state(model, enc)
    resampled = {**enc, "pos_embed": want, "head.weight": torch.zeros(1000, 192)}
    report = load_encoder_state(model, resampled)
    assert report.dropped == ["head.weight"] and "head.weight" in report.missing
    with pytest.raises(DataError, match="decoder_embed.weight"):
        load_encoder_state(model, {**resampled, "decoder_embed.weight": torch.zeros(1)})
    with pytest.raises(DataError, match="blocks.0.norm1.weight"):
        load_encoder_state(model, {k: v for k, v in resampled.items() if k != "blocks.0.norm1.weight"})


# ------------------------------------------------------------------------------------------ training, eval
def test_reid_eval_equals_evaluate_reid(market):
    from humanvision.data.io import read_image
    from humanvision.data.readers.reid import read_market1501
    from humanvision.metrics.reid import evaluate_reid, reid_distance

    data = read_market1501(market)
    torch.manual_seed(0)
    method = reid.ReIDMethod(create_model("reid_vit_tiny_patch16", num_classes=6, img_size=SIZE, **SMALL)).eval()
    got = reid.evaluate_reid_model(method, data, SIZE)

    def feats(items):
        x = torch.stack([reid.person_transform(read_image(it.path), SIZE) for it in items])
        with torch.no_grad():
            return method.model(x)["embedding"]

    q, g = feats(data.query), feats(data.gallery)
    res = evaluate_reid(reid_distance(q, g), [i.pid for i in data.query], [i.pid for i in data.gallery],
                        [i.camid for i in data.query], [i.camid for i in data.gallery])
    assert got["num_query"] == 3 and got["num_gallery"] == 11
    for k in ("mAP", "rank1", "rank5", "rank10", "mINP"):
        assert got[k] == pytest.approx(getattr(res, k), abs=1e-4)


def test_reid_tiny_training_run(market, tmp_path):
    recipe = reid_recipe(market, tmp_path / "run")
    summary = reid.run_training(recipe, quiet=True)
    assert summary["step"] == 3  # 6 ids: 1 chunk for the 2-image id + 5 x 1 -> 6 chunks / P = 2
    assert {"mAP", "rank1", "rank5", "rank10", "mINP"} <= set(summary["metrics"])
    assert 0.0 <= summary["metrics"]["mAP"] <= 100.0
    ev = tmp_path / "run" / "eval"
    metrics = json.loads((ev / "metrics.json").read_text())
    assert len(metrics["cmc"]) == 50 and (ev / "ranking.png").is_file()
    ranking = json.loads((ev / "ranking.json").read_text())
    assert len(ranking) == 2 and all(len(r["matches"]) == 3 for r in ranking)
    assert all(m["pid"] != -1 for r in ranking for m in r["matches"])  # junk removed from the picture
    losses = [r["loss"] for r in read_log(tmp_path / "run", "train")]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)  # log_every 1
    # evaluate_weights reads the number of ids from the checkpoint
    m = reid.evaluate_weights(recipe, tmp_path / "run", out_dir=tmp_path / "ev")
    assert m["mAP"] == pytest.approx(summary["metrics"]["mAP"], abs=1e-3)


def test_attribute_tiny_training_run(pa100k, tmp_path):
    from humanvision.data.readers.attributes import read_pa100k
    from humanvision.metrics.attributes import attribute_metrics

    recipe = attr.load_recipe({
        "attributes": {},
        "model": {"name": "attr_vit_tiny_patch16", "img_size": [64, 48], "args": SMALL},
        "data": {"source": "pa100k", "root": str(pa100k)},
        "train": {"epochs": 1, "batch_size": 4, "lr": 1e-3, "precision": "fp32", "channels_last": False,
                  "device": "cpu", "output_dir": str(tmp_path / "run"), "progress": False, "tensorboard": False,
                  "clip_grad": 10.0}})
    assert attr.load_recipe({"attributes": {}, "data": {"source": "synthetic"}}).train.clip_grad == 10.0
    summary = attr.run_training(recipe, quiet=True)
    assert summary["step"] == 5  # trainval = 16 + 4 images, batch 4
    assert {"mA", "accuracy", "precision", "recall", "f1"} <= set(summary["metrics"])
    table = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())["per_attribute"]
    assert [t["attribute"] for t in table] == ATTRS

    data = read_pa100k(pa100k)
    method = attr.build_method(recipe, 3, weights=tmp_path / "run")
    assert torch.allclose(method.pos_ratio, torch.tensor(data.positive_ratio("trainval"), dtype=torch.float32))
    got = attr.evaluate_attribute_model(method, data, "test", (64, 48))
    ds = attr.AttributeImages(data, "test", (64, 48))
    with torch.no_grad():
        scores = method.predict(torch.stack([ds[i]["image"] for i in range(len(ds))]))
    want = attribute_metrics(scores, data.labels[data.splits["test"]], 0.5)
    assert got["mA"] == pytest.approx(want.mA, abs=1e-6) and got["f1"] == pytest.approx(want.f1, abs=1e-6)


# --------------------------------------------------------------------------------------------------- recipes
def test_published_recipes():
    from humanvision.methods import pct

    unchecked = ("model.init", "data.root")
    for name in ("hap_reid_market1501_256x128", "hap_reid_msmt17_256x128", "reid_vit_tiny_synthetic"):
        path = CONFIGS / f"{name}.yaml"
        assert reid.is_reid_recipe(path) and not attr.is_attribute_recipe(path) and not pct.is_pct_recipe(path)
        r = reid.load_recipe(path, unchecked=unchecked)
        assert r.train.batch_size % r.reid.num_instances == 0
    for name in ("hap_reid_market1501_256x128", "hap_reid_msmt17_256x128"):
        r = reid.load_recipe(CONFIGS / f"{name}.yaml", unchecked=unchecked)
        t = r.train
        assert (r.model.name, r.model.img_size, r.model.init_grid, r.model.lem) == \
            ("reid_vit_base_patch16", (256, 128), (16, 8), False)
        assert (t.lr, t.layer_decay, t.epochs, t.batch_size, t.warmup_epochs, t.weight_decay) == \
            (8e-3, 0.4, 100, 64, 5, 0.05)
        assert r.reid.num_instances == 8 and r.model.init is not None and r.model.drop_path_rate == 0.1
    for name in ("hap_attr_pa100k", "attr_vit_tiny_synthetic"):
        path = CONFIGS / f"{name}.yaml"
        assert attr.is_attribute_recipe(path) and not reid.is_reid_recipe(path)
        attr.load_recipe(path, unchecked=unchecked)
    a = attr.load_recipe(CONFIGS / "hap_attr_pa100k.yaml", unchecked=unchecked)
    assert (a.train.lr, a.train.epochs, a.train.clip_grad, a.train.weight_decay, a.train.ema) == \
        (1.7e-4, 55, 10.0, 5e-4, 0.9998)
    assert a.model.img_size == (256, 192) and (a.data.train_split, a.data.eval_split) == ("trainval", "test")


def test_recipe_errors(market):
    with pytest.raises(ConfigError, match="model.name.*not a re-identification model"):
        reid.load_recipe({"reid": {}, "model": {"name": "attr_vit_tiny_patch16"}, "data": {"source": "synthetic"}})
    with pytest.raises(ConfigError, match="multiple of reid.num_instances"):
        reid.load_recipe({"reid": {"num_instances": 3}, "data": {"source": "synthetic"}})
    with pytest.raises(ConfigError, match="data.root"):
        reid.load_recipe({"reid": {}, "data": {"source": "market1501"}})
    with pytest.raises(ConfigError, match="model.args.img_size"):
        attr.load_recipe({"attributes": {}, "model": {"args": {"img_size": [1, 2]}}, "data": {"source": "synthetic"}})
    with pytest.raises(ConfigError, match="model.init: file not found"):
        reid.load_recipe({"reid": {}, "model": {"init": "/nonexistent/hap.pth"}, "data": {"source": "synthetic"}})


def test_synthetic_data_written_once_and_read(tmp_path):
    d = reid.load_recipe({"reid": {}, "data": {"source": "synthetic", "synthetic_dir": str(tmp_path / "m"),
                                               "synthetic_train_ids": 3, "synthetic_test_ids": 2}}).data
    data = reid.read_data(d, quiet=True)
    assert data.num_train_ids == 3 and len(data.query) >= 2 and {i.pid for i in data.gallery} >= {0, -1}
    stamp = tmp_path / "m" / "humanvision_synthetic.json"
    before = stamp.stat().st_mtime_ns
    assert len(reid.read_data(d, quiet=True).train) == len(data.train) and stamp.stat().st_mtime_ns == before

    a = attr.load_recipe({"attributes": {}, "data": {"source": "synthetic", "synthetic_dir": str(tmp_path / "p"),
                                                     "synthetic_images": 10}}).data
    pa = attr.read_data(a, quiet=True)
    assert len(pa.attributes) == 26 and len(pa.splits["trainval"]) + len(pa.splits["test"]) == 10
