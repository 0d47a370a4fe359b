"""The `retrieval` task: LAVIS' recall figures checked by hand, compute_sim_matrix against a
computation written here from its definition (with a small model of fixed tensors as input),
the task's records and result files, the retrieval builders, and two gloo processes giving what one
process gives."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
import torch
from coco_helpers import SMALL, caption_config
from omegaconf import OmegaConf

from mm_datasets_coco.builders import CocoRetrievalBuilder, Flickr30kBuilder, VGCaptionBuilder
from mm_datasets_coco.retrieval import RetrievalModel, RetrievalTask
from mm_datasets_coco.retrieval_scores import compute_sim_matrix, retrieval_metrics


# -- metrics, by hand -------------------------------------------------------------------------
def test_recalls_of_a_small_matrix_by_hand():
    # 3 images, 2 captions each: img2txt 0 -> [0, 1], 1 -> [2, 3], 2 -> [4, 5]
    img2txt = {0: [0, 1], 1: [2, 3], 2: [4, 5]}
    txt2img = {t: i for i, ts in img2txt.items() for t in ts}
    scores_i2t = np.array([
        [0.9, 0.1, 0.8, 0.2, 0.3, 0.4],   # image 0: text 0 first -> rank 0
        [0.7, 0.6, 0.5, 0.9, 0.8, 0.1],   # image 1: order 3,4,0,1,2,5 -> text 3 at rank 0
        [0.9, 0.8, 0.7, 0.6, 0.1, 0.5],   # image 2: order 0,1,2,3,5,4 -> text 5 at rank 4
    ])
    scores_t2i = np.array([
        [0.9, 0.5, 0.1],   # text 0 (image 0): rank 0
        [0.2, 0.9, 0.3],   # text 1 (image 0): order 1,2,0 -> rank 2
        [0.1, 0.8, 0.3],   # text 2 (image 1): rank 0
        [0.7, 0.6, 0.5],   # text 3 (image 1): rank 1
        [0.3, 0.2, 0.1],   # text 4 (image 2): rank 2
        [0.1, 0.2, 0.4],   # text 5 (image 2): rank 0
    ])
    m = retrieval_metrics(scores_i2t, scores_t2i, txt2img, img2txt)
    # image -> text ranks 0, 0, 4: R@1 2/3, R@5 and R@10 3/3
    assert m["txt_r1"] == pytest.approx(200 / 3) and m["txt_r5"] == 100.0 and m["txt_r10"] == 100.0
    # text -> image ranks 0, 2, 0, 1, 2, 0: R@1 3/6, R@5 6/6
    assert m["img_r1"] == pytest.approx(50.0) and m["img_r5"] == 100.0 and m["img_r10"] == 100.0
    assert m["txt_r_mean"] == pytest.approx((200 / 3 + 200) / 3)
    assert m["img_r_mean"] == pytest.approx(250 / 3)
    assert m["r_mean"] == pytest.approx(((200 / 3 + 200) / 3 + 250 / 3) / 2)
    assert m["agg_metrics"] == m["txt_r_mean"]  # LAVIS' choice


def test_recall_at_5_and_10_with_ranks_placed_by_construction():
    """12 images with one caption each; image i's caption is put at rank r_i, text t's image at rank s_t."""
    n = 12
    image_ranks = [0, 1, 3, 4, 5, 6, 9, 10, 11, 2, 0, 7]   # < 1: 2, < 5: 6, < 10: 10 of 12
    text_ranks = [0, 0, 0, 4, 5, 9, 10, 11, 1, 2, 8, 6]    # < 1: 3, < 5: 6, < 10: 10 of 12

    def placed(ranks):
        rng = np.random.default_rng(0)
        scores = np.zeros((n, n))
        for row, rank in enumerate(ranks):
            others = [c for c in rng.permutation(n) if c != row]
            order = others[:rank] + [row] + others[rank:]
            scores[row, order] = np.linspace(1.0, 0.0, n)   # descending along the chosen order
        return scores

    identity = {i: [i] for i in range(n)}
    m = retrieval_metrics(placed(image_ranks), placed(text_ranks), {i: i for i in range(n)}, identity)
    assert (m["txt_r1"], m["txt_r5"], m["txt_r10"]) == pytest.approx((100 * 2 / 12, 100 * 6 / 12, 100 * 10 / 12))
    assert (m["img_r1"], m["img_r5"], m["img_r10"]) == pytest.approx((100 * 3 / 12, 100 * 6 / 12, 100 * 10 / 12))


# -- compute_sim_matrix -----------------------------------------------------------------------
class TableModel(torch.nn.Module):
    """A retrieval model whose outputs are fixed tables (test input, not a stand-in for blip2):
    an image tensor holds its index, a text is "t<index>"; ITC features and ITM scores are looked
    up, and every call is recorded."""

    def __init__(self, n_images: int, n_texts: int, queries: int = 3, dim: int = 4, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.nn.Parameter(torch.zeros(1))  # a device to read
        self.image_feats = torch.nn.functional.normalize(torch.randn(n_images, queries, dim, generator=g), dim=-1)
        self.text_feats = torch.nn.functional.normalize(torch.randn(n_texts, dim, generator=g), dim=-1)
        self.itm = torch.randn(n_images, n_texts, generator=g)
        self.itm_pairs: list[tuple[int, int]] = []

    def retrieval_tokenize(self, texts):
        ids = torch.tensor([[int(t[1:]) + 1, 7] for t in texts])
        return ids, torch.ones_like(ids)

    def retrieval_image_features(self, image):
        index = image.reshape(len(image), -1)[:, 0].long()
        return index.float().reshape(-1, 1, 1).repeat(1, 2, 5), self.image_feats[index]

    def retrieval_text_features(self, input_ids, attention_mask):
        return self.text_feats[input_ids[:, 0] - 1]

    def retrieval_itm_scores(self, image_embeds, input_ids, attention_mask):
        images, texts = image_embeds[:, 0, 0].long(), input_ids[:, 0] - 1
        self.itm_pairs += list(zip(images.tolist(), texts.tolist()))
        return self.itm[images, texts]


def image_batches(n_images: int, batch: int = 4):
    return [{"image": torch.arange(s, min(n_images, s + batch)).float().reshape(-1, 1, 1, 1).expand(-1, 3, 2, 2),
             "index": torch.arange(s, min(n_images, s + batch))} for s in range(0, n_images, batch)]


def expected_matrices(model: TableModel, k_i2t: int, k_t2i: int):
    """LAVIS' definition, pair by pair: ITC = max over queries; the k best of a row get ITM + ITC."""
    n_img, n_txt = model.itm.shape
    itc = np.array([[max(float(q @ model.text_feats[t]) for q in model.image_feats[i]) for t in range(n_txt)]
                    for i in range(n_img)])
    i2t, t2i = np.full((n_img, n_txt), -100.0), np.full((n_txt, n_img), -100.0)
    for i in range(n_img):
        for t in sorted(range(n_txt), key=lambda t: -itc[i, t])[:k_i2t]:
            i2t[i, t] = float(model.itm[i, t]) + itc[i, t]
    for t in range(n_txt):
        for i in sorted(range(n_img), key=lambda i: -itc[i, t])[:k_t2i]:
            t2i[t, i] = float(model.itm[i, t]) + itc[i, t]
    return i2t, t2i


def test_the_model_of_these_tests_is_a_retrieval_model():
    assert isinstance(TableModel(2, 2), RetrievalModel)


@pytest.mark.parametrize("k", [1, 3, 50])
def test_sim_matrix_is_itc_then_top_k_itm(k):
    from mm_core.engine.distributed import DistContext

    model = TableModel(n_images=7, n_texts=11)
    texts = [f"t{i}" for i in range(11)]
    i2t, t2i = compute_sim_matrix(model, texts, image_batches(7), 7, k, DistContext())
    want_i2t, want_t2i = expected_matrices(model, min(k, 11), min(k, 7))  # k_test clamped to the candidates
    np.testing.assert_allclose(i2t, want_i2t, atol=1e-5)
    np.testing.assert_allclose(t2i, want_t2i, atol=1e-5)
    # only the top-k pairs went through the ITM head: k per image and k per text
    assert len(model.itm_pairs) == 7 * min(k, 11) + 11 * min(k, 7)


def test_a_missing_image_is_an_error():
    from mm_core.engine.distributed import DistContext
    from mm_core.errors import DataError

    with pytest.raises(DataError, match="every image of the split"):
        compute_sim_matrix(TableModel(5, 5), [f"t{i}" for i in range(5)], image_batches(4), 5, 2, DistContext())


# -- the builders -----------------------------------------------------------------------------
def test_retrieval_builders_give_lavis_attributes(shapes_root):
    for builder in (CocoRetrievalBuilder, Flickr30kBuilder):
        splits = builder(caption_config(shapes_root)).build_datasets()
        val = json.loads((shapes_root / "annotations" / "karpathy_val.json").read_text())
        ev = splits["val"]
        assert ev.image == [r["image"] for r in val] and len(ev) == SMALL["num_val"]
        assert ev.text == [c for r in val for c in r["caption"]]
        assert all(ev.text[t] in val[i]["caption"] for t, i in ev.txt2img.items())
        assert [len(ev.img2txt[i]) for i in range(len(val))] == [len(r["caption"]) for r in val]
        assert sorted(t for ts in ev.img2txt.values() for t in ts) == list(range(len(ev.text)))
        item = ev[3]
        assert item["index"] == 3 and item["image_path"] == val[3]["image"] and item["image"].shape[0] == 3
        train = splits["train"]
        records = json.loads((shapes_root / "annotations" / "karpathy_train.json").read_text())
        distinct = list(dict.fromkeys(r["image_id"] for r in records))
        batch = train.collater([train[0], train[1], train[2]])
        assert batch["image_id"].tolist() == [distinct.index(records[i]["image_id"]) for i in range(3)]
        assert batch["text_input"] == [records[i]["caption"] for i in range(3)]


def test_the_eval_text_processor_is_applied_to_the_queries(shapes_root):
    cfg = OmegaConf.merge(caption_config(shapes_root),
                          {"text_processor": {"eval": {"name": "blip_caption", "max_words": 2}}})
    ev = CocoRetrievalBuilder(cfg).build_datasets()["val"]
    assert all(len(t.split()) <= 2 for t in ev.text) and ev.text[0] == " ".join(ev.references(0)[0].lower().split()[:2])


def test_vg_caption_builds_its_train_split(shapes_root):
    block = caption_config(shapes_root)
    block.build_info.annotations = {"train": block.build_info.annotations.train}
    splits = VGCaptionBuilder(block).build_datasets()
    assert list(splits) == ["train"] and len(splits["train"]) == SMALL["num_train"] * SMALL["captions_per_train_image"]


# -- the task ---------------------------------------------------------------------------------
class PixelModel(torch.nn.Module):
    """Features from the pixels (mean colour per image region) and from the words of a text, so a
    real split can be ranked; the expected scores are recomputed in the test from these formulas."""

    VOCAB = 257

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.to_feat = torch.nn.Parameter(torch.randn(3, 6, generator=g))
        self.words = torch.nn.Parameter(torch.randn(self.VOCAB, 6, generator=g))

    def regions(self, image):
        return torch.stack([image[:, :, :, : image.shape[-1] // 2].mean((2, 3)),
                            image[:, :, :, image.shape[-1] // 2:].mean((2, 3))], dim=1)   # [B, 2, 3]

    def retrieval_tokenize(self, texts):
        ids = [[1 + zlib.crc32(w.encode()) % (self.VOCAB - 1) for w in t.split()][:8] for t in texts]
        ids = [row + [0] * (8 - len(row)) for row in ids]
        ids = torch.tensor(ids)
        return ids, (ids > 0).long()

    def retrieval_image_features(self, image):
        regions = self.regions(image)
        return regions, torch.nn.functional.normalize(regions @ self.to_feat, dim=-1)

    def retrieval_text_features(self, input_ids, attention_mask):
        pooled = (self.words[input_ids] * attention_mask[..., None]).sum(1)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def retrieval_itm_scores(self, image_embeds, input_ids, attention_mask):
        return (image_embeds @ self.to_feat).mean(1).mul(self.retrieval_text_features(input_ids, attention_mask)).sum(-1)


def test_the_task_scores_records_and_result_files(shapes_root, tmp_path):
    ev = CocoRetrievalBuilder(caption_config(shapes_root)).build_datasets()["val"]
    model = PixelModel().eval().requires_grad_(False)
    task = RetrievalTask(OmegaConf.create({"run": {"task": "retrieval", "k_test": 4, "batch_size_eval": 4}}))
    task.before_evaluation(model=model, dataset=ev)
    records = []
    for start in range(0, len(ev), 4):
        records += task.valid_step(model, ev.collater([ev[i] for i in range(start, min(len(ev), start + 4))]))
    metrics = task.after_evaluation(records, "val", 0, tmp_path)
    task.save_results(records, tmp_path, "val", 0)

    # the matrices from the formulas, independently: ITC over the two regions, top-4 re-scored
    with torch.no_grad():
        images = torch.stack([ev[i]["image"] for i in range(len(ev))])
        ids, mask = model.retrieval_tokenize(ev.text)
        feats, text_feats = model.retrieval_image_features(images)[1], model.retrieval_text_features(ids, mask)
        itc = torch.stack([(feats[i] @ text_feats.t()).max(0).values for i in range(len(ev))]).numpy()
        regions = model.regions(images)
    i2t = np.full(itc.shape, -100.0)
    for i in range(len(ev)):
        for t in np.argsort(-itc[i], kind="stable")[:4]:
            itm = float(model.retrieval_itm_scores(regions[i:i + 1], ids[t:t + 1], mask[t:t + 1]))
            i2t[i, t] = itm + itc[i, t]
    own_rank = [min(list(np.argsort(-i2t[i], kind="stable")).index(t) for t in ev.img2txt[i]) for i in range(len(ev))]
    assert metrics["txt_r1"] == pytest.approx(100 * np.mean(np.array(own_rank) < 1))
    assert metrics["txt_r5"] == pytest.approx(100 * np.mean(np.array(own_rank) < 5))

    saved = json.loads((tmp_path / "result" / "val_epoch0.json").read_text())
    assert [r["image_id"] for r in saved] == list(range(len(ev)))
    best = [int(np.argsort(-i2t[i], kind="stable")[0]) for i in range(len(ev))]
    assert [r["text"] for r in saved] == [ev.text[t] for t in best]
    assert [r["rank"] for r in saved] == own_rank
    assert saved[2]["image"] == ev.image[2] and saved[2]["references"] == [ev.text[t] for t in ev.img2txt[2]]
    assert saved[2]["score"] == pytest.approx(1 / (1 + own_rank[2]))
    scores = json.loads((tmp_path / "result" / "val_epoch0_scores.json").read_text())
    assert scores["metrics"] == pytest.approx(metrics) and len(scores["per_text"]) == len(ev.text)


def test_a_model_without_the_retrieval_methods_is_a_config_error(shapes_root):
    from mm_core.errors import ConfigError

    ev = CocoRetrievalBuilder(caption_config(shapes_root)).build_datasets()["val"]
    task = RetrievalTask(OmegaConf.create({"run": {"task": "retrieval"}}))
    with pytest.raises(ConfigError, match="lacks retrieval_tokenize, retrieval_image_features"):
        task.before_evaluation(model=torch.nn.Linear(2, 2), dataset=ev)
    with pytest.raises(ConfigError, match="k_test must be >= 1"):
        RetrievalTask(OmegaConf.create({"run": {"k_test": 0}}))


# -- two processes ----------------------------------------------------------------------------
def _sharded_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from mm_core.engine.distributed import DistContext

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        model = TableModel(n_images=9, n_texts=13)
        result = compute_sim_matrix(model, [f"t{i}" for i in range(13)], image_batches(9), 9, 3,
                                    DistContext(rank, world_size, backend="gloo"))
        matrices = {} if result is None else {"i2t": result[0], "t2i": result[1]}
        np.savez(f"{out_dir}/rank{rank}.npz", pairs=np.asarray(model.itm_pairs, dtype=np.int64), **matrices)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_give_the_one_process_matrices(tmp_path):
    import torch.multiprocessing as mp

    from mm_core.engine.distributed import DistContext

    mp.spawn(_sharded_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(2)]
    single = TableModel(n_images=9, n_texts=13)
    want = compute_sim_matrix(single, [f"t{i}" for i in range(13)], image_batches(9), 9, 3, DistContext())
    assert "i2t" not in ranks[1]  # rank 0 alone holds the gathered matrices
    np.testing.assert_array_equal(ranks[0]["i2t"], want[0])
    np.testing.assert_array_equal(ranks[0]["t2i"], want[1])
    # the re-ranking was split: each pair scored by exactly one rank, together all of them
    pairs0, pairs1 = ([tuple(p) for p in r["pairs"].tolist()] for r in ranks)
    assert pairs0 and pairs1 and sorted(pairs0 + pairs1) == sorted(tuple(p) for p in single.itm_pairs)
