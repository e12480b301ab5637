"""The network's parts that whole-training tests do not single out: the pointer's distance
bias (its step twin must see the same distances as the whole-sequence model) and ``--init``
from a network without it."""

import json
from pathlib import Path

import numpy as np
import pytest

from playbach.modeldir import FORMAT_VERSION
from playbach.vocab import EncodingOptions, Vocabulary
from trainer.config import UserError, make_config


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return Vocabulary(EncodingOptions())


def _tokens(vocab: Vocabulary, cello_dir: Path, dirs: dict) -> np.ndarray:
    from trainer.corpus import load_corpus
    from trainer.dataset import encode

    corpus = load_corpus("cello", [cello_dir / "cs1-1pre.mid"], EncodingOptions(),
                         Path(dirs["CACHE_DIR"]), progress=False)
    return encode(corpus.pieces, vocab)[0][:200]


def test_step_model_sees_the_distances_the_sequence_model_sees(vocab, cello_dir, dirs,
                                                               tmp_path):
    from trainer.export import check_parity, to_tflite
    from trainer.model import build_model

    cfg = make_config("tiny", ["--copy-recency=true"])  # a 16-step window, 200 steps
    model = build_model(vocab, cfg)
    distance = model.get_layer("pointer").distance
    # strong and different per distance: a distance read back to front would show at once
    distance.assign(np.random.default_rng(0).normal(0, 3, distance.shape).astype("float32"))
    plain, _ = to_tflite(model, cfg, vocab)
    (tmp_path / "step.tflite").write_bytes(plain)
    (tmp_path / "vocab.json").write_text(vocab.to_json())
    (tmp_path / "meta.json").write_text(json.dumps({"format_version": FORMAT_VERSION}))
    report = check_parity(model, tmp_path, _tokens(vocab, cello_dir, dirs))
    assert report["max_logit_diff"] < 1e-4 and report["pitch_top1_agreement"] == 1.0


def test_init_leaves_only_the_distance_bias_to_training(vocab, tmp_path):
    from trainer.fit import start_from
    from trainer.model import build_model

    source = build_model(vocab, make_config("tiny", []))
    source.save(tmp_path / "model.keras")
    target = build_model(vocab, make_config("tiny", ["--copy-recency=true"]))
    start_from(target, tmp_path / "model.keras")
    mine = {w.path: w.numpy() for w in target.weights}
    assert all(np.array_equal(mine[w.path], w.numpy()) for w in source.weights)
    assert not mine["pointer/distance"].any()  # starts at zero: attention by content alone
    # the other way round, the source has weights the target has no place for
    target.save(tmp_path / "recency.keras")
    with pytest.raises(UserError, match=r"pointer/distance .* has no place here"):
        start_from(source, tmp_path / "recency.keras")
    # and a target with parts the source lacks (other than the distance bias) is refused
    with pytest.raises(UserError, match="it has no heads/key_head"):
        start_from(build_model(vocab, make_config("tiny", ["--key-profile=true"])),
                   tmp_path / "model.keras")
