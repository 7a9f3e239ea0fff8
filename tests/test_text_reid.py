"""Text-to-image person re-id (pretraining.md B.9.2): model shapes of both branches, the BiLSTM text encoder
against a per-caption computation with plain ``nn.LSTM`` pieces, the semi-hard ranking loss and text->image
Rank-k / mAP against brute-force loops written here, the per-part learning rates and step schedule, a tiny
training run through the engine on a tiny synthetic CUHK-PEDES set (vocabulary saved with the run and reused at
evaluation), the published recipes and the optional BERT branch.

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

import humanvision.models.text_reid  # noqa: F401  (registers the t2i entry points)
from humanvision.data.readers.text_reid import Vocabulary, read_cuhk_pedes
from humanvision.engine import read_log
from humanvision.errors import ConfigError, DataError
from humanvision.methods import text_reid as t2i
from humanvision.models import create_model
from humanvision.models.text_reid import BiLSTMPool, TextEncoder, TextImageReID

torch.set_num_threads(1)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SMALL = {"depth": 2}
SIZE = (64, 32)  # (height, width)


def tiny_model(num_classes: int = 5, vocab_size: int = 20) -> TextImageReID:
    return create_model("t2i_vit_tiny_patch16", num_classes=num_classes, img_size=SIZE, vocab_size=vocab_size,
                        **SMALL)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    """A tiny synthetic CUHK-PEDES set (written through the recipe's synthetic source): 8 ids x 2 images, ids 1-4
    train, 5-8 test."""
    root = tmp_path_factory.mktemp("cuhk") / "synthetic"
    t2i.prepare_synthetic(_data(root), quiet=True)
    return root


def _data(root: Path) -> t2i.DataConfig:
    return t2i.DataConfig(source="synthetic", synthetic_dir=root, synthetic_ids=8, synthetic_images_per_id=(2, 2),
                          synthetic_image_size=(64, 32), synthetic_split=(0.5, 0.0, 0.5))


def recipe_for(root: Path, out: Path, **train) -> t2i.T2IRecipe:
    d = _data(root)
    return t2i.load_recipe({
        "t2i": {"max_length": 24, "vocab_min_count": 1},
        "model": {"name": "t2i_vit_tiny_patch16", "img_size": list(SIZE), "args": SMALL},
        "data": {"source": "synthetic", "synthetic_dir": str(root), "synthetic_ids": d.synthetic_ids,
                 "synthetic_images_per_id": list(d.synthetic_images_per_id),
                 "synthetic_image_size": list(d.synthetic_image_size), "synthetic_split": list(d.synthetic_split)},
        "train": {"epochs": 1, "batch_size": 8, "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0,
                  "schedule": "step", "milestones": [20, 40, 50], "precision": "fp32", "channels_last": False,
                  "device": "cpu", "output_dir": str(out), "progress": False, "tensorboard": False, "log_every": 1,
                  **train},
        "eval": {"batch_size": 16, "num_vis": 3, "topk": 4}})


# --------------------------------------------------------------------------------------------------- models
def test_model_shapes_and_branches():
    torch.manual_seed(0)
    m = tiny_model().eval()
    assert m.grid_size == (4, 2) and m.feature_dim == 96 and m.vocab_size == 20
    images = torch.randn(3, 3, *SIZE)
    tokens = torch.tensor([[2, 3, 4, 0, 0], [5, 0, 0, 0, 0], [1, 7, 1, 9, 11]])
    out = m(images, tokens)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "image_features": (3, 96), "text_features": (3, 96), "image_logits": (3, 5), "text_logits": (3, 5)}
    with torch.no_grad():
        # image: max over the patch tokens after the final LN (class token excluded), then the shared 1x1 conv
        pooled = m.image.forward_tokens(images)[:, 1:].max(dim=1).values
        torch.testing.assert_close(out["image_features"], pooled @ m.proj.weight[:, :, 0, 0].T)
        torch.testing.assert_close(out["text_features"], m.text(tokens) @ m.proj.weight[:, :, 0, 0].T)
        # one shared classifier for both modalities
        torch.testing.assert_close(out["text_logits"], m.classifier(out["text_features"]))
        torch.testing.assert_close(out["image_logits"], m.classifier(out["image_features"]))
    assert m.proj.bias is None and m.text.embed.padding_idx == 0

    # the published size (meta device: no memory, no init cost)
    with torch.device("meta"):
        b = create_model("t2i_vit_base_patch16", num_classes=11000, vocab_size=12000)
    assert b.grid_size == (24, 8) and b.image.backbone.pos_embed.shape == (1, 1 + 24 * 8, 768)
    assert b.image.backbone.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)
    assert tuple(b.proj.weight.shape) == (384, 768, 1, 1) and b.proj.bias is None
    assert tuple(b.classifier.weight.shape) == (11000, 384)
    lstm = b.text.lstm.lstm
    assert (lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.bidirectional) == (768, 768, 1, True)
    assert [n for n, _ in lstm.named_parameters()] == ["weight_ih_l0", "weight_hh_l0", "weight_ih_l0_reverse",
                                                       "weight_hh_l0_reverse"]  # no bias
    assert tuple(b.text.embed.weight.shape) == (12000, 768)
    with pytest.raises(ValueError, match="exactly one of vocab_size"):
        TextEncoder(8)


def test_bilstm_directions_averaged_and_max_pooled():
    torch.manual_seed(0)
    pool = BiLSTMPool(5, 4)
    x = torch.randn(3, 6, 5)
    lengths = torch.tensor([6, 2, 4])
    x[1, 2:] = 100.0  # padding content must not leak into either direction or the maximum
    fwd = torch.nn.LSTM(5, 4, bias=False, batch_first=True)
    bwd = torch.nn.LSTM(5, 4, bias=False, batch_first=True)
    with torch.no_grad():
        fwd.weight_ih_l0.copy_(pool.lstm.weight_ih_l0)
        fwd.weight_hh_l0.copy_(pool.lstm.weight_hh_l0)
        bwd.weight_ih_l0.copy_(pool.lstm.weight_ih_l0_reverse)
        bwd.weight_hh_l0.copy_(pool.lstm.weight_hh_l0_reverse)
        tokens, pooled = pool.forward_tokens(x, lengths), pool(x, lengths)
        for b, n in enumerate(lengths.tolist()):
            seq = x[b:b + 1, :n]
            f = fwd(seq)[0][0]
            r = bwd(seq.flip(1))[0][0].flip(0)  # the backward direction starts at the last real token
            want = 0.5 * (f + r)
            torch.testing.assert_close(tokens[b, :n], want)
            assert torch.all(tokens[b, n:] == 0)
            torch.testing.assert_close(pooled[b], want.max(dim=0).values)

    # the text encoder: lengths from the padding id, and the same feature whatever the amount of padding
    enc = TextEncoder(4, vocab_size=12, word_dim=5).eval()
    ids = torch.tensor([[3, 7, 2, 0, 0, 0], [4, 0, 0, 0, 0, 0]])
    assert enc.lengths(ids).tolist() == [3, 1]
    with torch.no_grad():
        torch.testing.assert_close(enc(ids), enc(ids[:, :3]))
        torch.testing.assert_close(enc(ids)[0], enc.lstm(enc.embed(ids[:1, :3]), torch.tensor([3]))[0])


# --------------------------------------------------------------------------------------------------- losses
def brute_force_ranking(sim: np.ndarray, labels: list[int], margin: float, reduction: str) -> tuple[float, int]:
    """Both directions, one anchor at a time: the semi-hard negative is the most similar negative below the
    positive, else the least similar negative; returns the loss and how often the fallback was used."""
    total, fallbacks = 0.0, 0
    for s in (sim, sim.T):
        terms = []
        for i in range(len(labels)):
            negs = [s[i, j] for j in range(len(labels)) if labels[j] != labels[i]]
            if not negs:
                continue
            below = [v for v in negs if v < s[i, i]]
            if below:
                n = max(below)
            else:
                n, fallbacks = min(negs), fallbacks + 1
            terms.append(max(0.0, margin - s[i, i] + n))
        total += sum(terms) if reduction == "sum" else (sum(terms) / len(terms) if terms else 0.0)
    return total, fallbacks


def test_ranking_loss_equals_brute_force():
    torch.manual_seed(0)
    labels = [0, 0, 1, 2, 2, 3, 4]
    fi, ft = torch.randn(7, 6), torch.randn(7, 6)
    ft[3] = -fi[3]  # a positive less similar than every negative: the fallback is used
    sim = (F.normalize(fi, dim=1) @ F.normalize(ft, dim=1).T).double().numpy()
    for margin in (0.2, 2.5):
        for reduction in ("sum", "mean"):
            got = t2i.semi_hard_ranking_loss(fi, ft, torch.tensor(labels), margin, reduction)
            want, fallbacks = brute_force_ranking(sim, labels, margin, reduction)
            assert got.item() == pytest.approx(want, rel=1e-5, abs=1e-6)
            assert fallbacks >= 1
    # gradients are finite, and only the chosen similarities get any
    fi.requires_grad_(True)
    t2i.semi_hard_ranking_loss(fi, ft, torch.tensor(labels), 0.2).backward()
    assert torch.isfinite(fi.grad).all()
    # no negatives at all: nothing to rank
    assert t2i.semi_hard_ranking_loss(fi, ft, torch.zeros(7, dtype=torch.long), 0.2).item() == 0.0


# ----------------------------------------------------------------------------------------------- evaluation
def test_text_to_image_recall_equals_brute_force():
    rng = np.random.default_rng(0)
    gid = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8])
    qid = rng.choice(gid, 30)
    sim = rng.uniform(-1, 1, (30, len(gid)))
    res = t2i.text_to_image_metrics(sim, qid, gid)
    hits = {1: 0, 5: 0, 10: 0}
    aps, inps = [], []
    for i in range(len(qid)):
        order = sorted(range(len(gid)), key=lambda j: -sim[i, j])
        match = [gid[j] == qid[i] for j in order]
        first = match.index(True) + 1
        for k in hits:
            hits[k] += first <= k
        positions = [p + 1 for p, m in enumerate(match) if m]
        aps.append(np.mean([(n + 1) / p for n, p in enumerate(positions)]))
        inps.append(len(positions) / positions[-1])
    assert res.num_queries == res.num_valid_queries == 30
    assert res.rank1 == pytest.approx(100 * hits[1] / 30)
    assert res.rank5 == pytest.approx(100 * hits[5] / 30)
    assert res.rank10 == pytest.approx(100 * hits[10] / 30)
    assert res.mAP == pytest.approx(100 * np.mean(aps))
    assert res.mINP == pytest.approx(100 * np.mean(inps))


def test_evaluate_model_equals_manual_features(synthetic):
    from humanvision.data.io import read_image
    from humanvision.methods.reid import person_transform

    data = read_cuhk_pedes(synthetic)
    assert (len(data.train), len(data.val), len(data.test)) == (8, 0, 8)
    vocab = Vocabulary.build(c for it in data.train for c in it.captions)
    torch.manual_seed(0)
    method = t2i.TextReIDMethod(tiny_model(4, len(vocab))).eval()
    got = t2i.evaluate_t2i_model(method, data.test, vocab, SIZE, 24)
    with torch.no_grad():
        img = method.model.image_features(torch.stack([person_transform(read_image(it.path), SIZE)
                                                       for it in data.test]))
        caps = [(c, it.pid) for it in data.test for c in it.captions]
        txt = method.model.text_features(torch.stack([torch.from_numpy(vocab.encode(c, 24)) for c, _ in caps]))
    sim = (F.normalize(txt, dim=1) @ F.normalize(img, dim=1).T).numpy()
    want = t2i.text_to_image_metrics(sim, [p for _, p in caps], [it.pid for it in data.test])
    assert got["num_queries"] == 16 and got["num_gallery"] == 8 and got["num_ids"] == 4
    for k, attr in (("R1", "rank1"), ("R5", "rank5"), ("R10", "rank10"), ("mAP", "mAP")):
        assert got[k] == pytest.approx(getattr(want, attr), abs=1e-4)


# ------------------------------------------------------------------------------------------------- training
def test_per_part_learning_rates_and_step_schedule(synthetic, tmp_path):
    from humanvision.engine import Trainer

    recipe = recipe_for(synthetic, tmp_path / "run")
    t = recipe.t2i
    assert t.backbone_lr == 1e-4 and recipe.train.lr == 1e-3
    method = t2i.build_method(recipe, num_classes=4, vocab_size=20)
    trainer = Trainer(recipe.train, method, list(range(16)),
                      param_groups_fn=lambda m: t2i.t2i_param_groups(m, 0.0, t.backbone_lr / recipe.train.lr))
    assert isinstance(trainer.optimizer, torch.optim.Adam)
    names = {n for n, p in method.named_parameters()}
    grouped = [n for g in trainer.optimizer.param_groups for n in g["param_names"]]
    assert sorted(grouped) == sorted(names)  # every parameter exactly once
    steps = trainer.steps_per_epoch
    assert steps == 2
    for epoch, factor in ((0, 1.0), (19, 1.0), (20, 0.1), (40, 0.01), (50, 0.001)):
        trainer.schedule.apply(trainer.optimizer, epoch * steps)
        for g in trainer.optimizer.param_groups:
            image = all(n.startswith("model.image.") for n in g["param_names"])
            assert image or not any(n.startswith("model.image.") for n in g["param_names"])
            assert g["lr"] == pytest.approx((1e-4 if image else 1e-3) * factor)


def test_tiny_training_run_and_vocabulary_reuse(synthetic, tmp_path):
    out = tmp_path / "run"
    recipe = recipe_for(synthetic, out)
    summary = t2i.run_training(recipe, quiet=True)
    assert summary["step"] == 2  # 4 train ids x 2 images x 2 captions = 16 pairs, batch 8
    assert {"R1", "R5", "R10", "mAP", "mINP"} <= set(summary["metrics"])
    assert 0.0 <= summary["metrics"]["R1"] <= 100.0
    rows = read_log(out, "train")
    assert len(rows) == 2 and all(math.isfinite(r["loss"]) and math.isfinite(r["ranking_loss"]) for r in rows)
    assert all(r["id_loss"] > 0 for r in rows)
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["num_queries"] == 16 and len(metrics["cmc"]) == 50
    ranking = json.loads((out / "eval" / "ranking.json").read_text())
    assert len(ranking) == 3 and all(len(r["matches"]) == 4 for r in ranking)

    # the vocabulary of the training captions is saved with the run ...
    data = read_cuhk_pedes(synthetic)
    saved = Vocabulary.load(out / "vocab.json")
    assert saved.tokens == Vocabulary.build(c for it in data.train for c in it.captions).tokens
    # ... and found again from the run folder, a checkpoint folder or a weights file
    for weights in (out, out / "last", out / "last" / "model.safetensors"):
        assert t2i.find_vocabulary(weights) == out / "vocab.json"
    m = t2i.evaluate_weights(recipe, out / "last", out_dir=tmp_path / "ev")
    assert m["R1"] == pytest.approx(summary["metrics"]["R1"], abs=1e-3)
    assert m["mAP"] == pytest.approx(summary["metrics"]["mAP"], abs=1e-3)
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["weights"] == str(out / "last")

    # another vocabulary does not fit the checkpoint: an error naming it, not a silent mis-encoding
    other = Vocabulary(["a", "b"]).save(tmp_path / "other.json")
    wrong = t2i.load_recipe({**_as_dict(recipe), "t2i": {"max_length": 24, "vocab": str(other)}})
    with pytest.raises(DataError, match="not the vocabulary of this run"):
        t2i.evaluate_weights(wrong, out)
    (out / "vocab.json").unlink()
    with pytest.raises(DataError, match="vocab.json"):
        t2i.evaluate_weights(recipe, out)


def _as_dict(recipe: t2i.T2IRecipe) -> dict:
    from humanvision.config import config_to_dict

    return config_to_dict(recipe)


# --------------------------------------------------------------------------------------------------- recipes
def test_published_recipes():
    unchecked = ("model.init", "data.root")
    hap = t2i.load_recipe(CONFIGS / "hap_t2i_cuhk_pedes.yaml", unchecked=unchecked)
    assert t2i.is_t2i_recipe(CONFIGS / "hap_t2i_cuhk_pedes.yaml") and t2i.is_t2i_recipe(hap)
    assert not t2i.is_t2i_recipe(CONFIGS / "reid_vit_tiny_synthetic.yaml")
    m, t, tr = hap.model, hap.t2i, hap.train
    assert (m.name, m.img_size, m.init_grid, m.drop_path_rate) == ("t2i_vit_base_patch16", (384, 128), (16, 8), 0.1)
    assert (t.margin, t.backbone_lr, t.id_loss_weight, t.ranking_loss_weight) == (0.2, 1e-4, 1.0, 1.0)
    assert (tr.optimizer, tr.lr, tr.schedule, tr.milestones, tr.gamma, tr.epochs, tr.batch_size) == (
        "adam", 1e-3, "step", (20, 40, 50), 0.1, 60, 64)
    assert hap.data.source == "cuhk_pedes" and hap.data.exclude_train_ids == (1369, 4116, 6116)
    assert tr.best_metric == "R1" and tr.layer_decay is None
    # without a train section the published optimisation applies
    d = t2i.load_recipe({"t2i": {}, "data": {"source": "synthetic"}}).train
    assert (d.optimizer, d.lr, d.weight_decay, d.schedule, d.milestones, d.epochs, d.batch_size) == (
        "adam", 1e-3, 0.0, "step", (20, 40, 50), 60, 64)

    tiny = t2i.load_recipe(CONFIGS / "t2i_vit_tiny_synthetic.yaml")
    assert tiny.data.source == "synthetic" and tiny.model.name == "t2i_vit_tiny_patch16" and tiny.model.init is None


def test_recipe_errors(tmp_path):
    base = {"t2i": {}, "model": {"name": "t2i_vit_tiny_patch16"}, "data": {"source": "synthetic"}}
    with pytest.raises(ConfigError, match="train.layer_decay"):
        t2i.load_recipe({**base, "train": {"layer_decay": 0.65}})
    with pytest.raises(ConfigError, match="model.args.vocab_size"):
        t2i.load_recipe({**base, "model": {"name": "t2i_vit_tiny_patch16", "args": {"vocab_size": 9}}})
    with pytest.raises(ConfigError, match="not a text-to-image re-id model"):
        t2i.load_recipe({**base, "model": {"name": "reid_vit_tiny_patch16"}})
    with pytest.raises(ConfigError, match="data.exclude_train_ids"):
        t2i.load_recipe({**base, "data": {"source": "icfg_pedes", "root": str(tmp_path),
                                          "exclude_train_ids": [1]}})
    with pytest.raises(ConfigError, match="data.root"):
        t2i.load_recipe({**base, "data": {"source": "rstpreid"}})
    with pytest.raises(DataError, match="vocab.json"):
        t2i.find_vocabulary(tmp_path)


# ------------------------------------------------------------------------------------------------ BERT branch
def test_bert_option_without_transformers(tmp_path):
    try:
        import transformers  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("transformers is installed (test_bert_text_branch covers the option)")
    with pytest.raises(ConfigError, match="pip install transformers"):
        t2i.load_recipe({"t2i": {}, "model": {"name": "t2i_vit_tiny_patch16", "bert": str(tmp_path)},
                         "data": {"source": "synthetic"}})
    with pytest.raises(ConfigError, match="pip install transformers"):
        TextEncoder(8, bert=tmp_path)


def test_bert_text_branch(tmp_path):
    transformers = pytest.importorskip("transformers")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "man", "woman", "in", "red", "blue", "shirt"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    transformers.BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(str(tmp_path))
    cfg = transformers.BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=32, pad_token_id=0)
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(str(tmp_path))

    tok = t2i.PretrainedTokenizer(tmp_path)
    ids = tok.encode("A man in a red shirt", 10)
    assert ids.tolist() == [2, 5, 6, 8, 5, 9, 11, 3, 0, 0]  # [CLS] a man in a red shirt [SEP] [PAD] [PAD]
    assert tok.encode("a man " * 9, 6).tolist() == [2, 5, 6, 5, 6, 3]  # cut to max_len, [SEP] kept
    recipe = t2i.load_recipe({"t2i": {}, "model": {"name": "t2i_vit_tiny_patch16", "img_size": list(SIZE),
                                                   "bert": str(tmp_path), "args": SMALL},
                              "data": {"source": "synthetic"}})
    method = t2i.build_method(recipe, num_classes=3)
    text = method.model.text
    assert text.embed is None and all(not p.requires_grad for p in text.bert.parameters())
    method.train()
    assert not text.bert.bert.training and text.lstm.training  # BERT stays in eval mode
    groups = t2i.t2i_param_groups(method, 0.0, 0.1)
    assert not any(".bert." in n for g in groups for n in g["param_names"])
    tokens = torch.from_numpy(np.stack([ids, tok.encode("a woman in blue", 10)]))
    method.eval()
    with torch.no_grad():
        got = method.model.text(tokens)
        hidden = text.bert.bert(input_ids=tokens, attention_mask=(tokens != 0).long()).last_hidden_state
        want = text.lstm(hidden, (tokens != 0).sum(1))
    torch.testing.assert_close(got, want)
    out = method({"image": torch.randn(2, 3, *SIZE), "tokens": tokens, "label": torch.tensor([0, 1])})
    assert math.isfinite(out["loss"].item())
