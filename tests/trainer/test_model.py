"""The network's parts that whole-training tests do not single out: the pointer's distance
bias (its step twin must see the same distances as the whole-sequence model) and ``--init``
from a network without it."""

import json
from pathlib import Path

import numpy as np
import pytest

from playbach.keys import Key, KeyTable, hypotheses
from playbach.modeldir import FORMAT_VERSION
from playbach.vocab import EncodingOptions, Vocabulary
from trainer.config import UserError, make_config
from trainer.dataset import piece_key


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return Vocabulary(EncodingOptions())


def _tokens(vocab: Vocabulary, cello_dir: Path, dirs: dict) -> np.ndarray:
    from trainer.corpus import load_corpus
    from trainer.dataset import encode

    corpus = load_corpus("cello", [cello_dir / "cs1-1pre.mid"], EncodingOptions(),
                         Path(dirs["CACHE_DIR"]), progress=False)
    return encode(corpus.pieces, vocab)[0][:200]


def _assert_parity(model, cfg, vocab, cello_dir, dirs, folder: Path) -> None:
    """The step model exported from ``model`` gives its logits on 200 steps of a prelude."""
    from trainer.export import check_parity, to_tflite

    plain, _ = to_tflite(model, cfg, vocab)
    (folder / "step.tflite").write_bytes(plain)
    (folder / "vocab.json").write_text(vocab.to_json())
    tokens = _tokens(vocab, cello_dir, dirs)
    _meta(folder, cfg, piece_key(tokens))
    report = check_parity(model, folder, tokens)
    assert report["max_logit_diff"] < 1e-4 and report["pitch_top1_agreement"] == 1.0


def test_step_model_sees_the_distances_the_sequence_model_sees(vocab, cello_dir, dirs,
                                                               tmp_path):
    from trainer.model import build_model

    cfg = make_config("tiny", ["--copy-recency=true"])  # a 16-step window, 200 steps
    model = build_model(vocab, cfg)
    distance = model.get_layer("pointer").distance
    # strong and different per distance: a distance read back to front would show at once
    distance.assign(np.random.default_rng(0).normal(0, 3, distance.shape).astype("float32"))
    _assert_parity(model, cfg, vocab, cello_dir, dirs, tmp_path)


def test_step_model_sees_the_match_lengths_the_sequence_model_sees(vocab, cello_dir, dirs,
                                                                    tmp_path):
    from trainer.model import build_model

    cfg = make_config("tiny", ["--copy-match=8"])  # a prelude's figures repeat within 16 steps
    model = build_model(vocab, cfg)
    matched = model.get_layer("pointer").matched
    assert np.asarray(matched)[:, -1] * 8 == pytest.approx(4.0)  # 0.5 a matched step at first
    matched.assign(np.random.default_rng(0).normal(0, 0.4, matched.shape).astype("float32"))
    _assert_parity(model, cfg, vocab, cello_dir, dirs, tmp_path)


def test_step_model_keeps_the_rhythm_stream_the_sequence_model_reads(vocab, cello_dir, dirs,
                                                                     tmp_path):
    from trainer.model import build_model, state_offset

    cfg = make_config("tiny", ["--rhythm=8"])
    model = build_model(vocab, cfg)
    head = model.get_layer("rhythm").out
    kernel, bias = head.get_weights()  # loud, so a rhythm state dropped between steps shows
    head.set_weights([kernel * 30, bias])
    assert state_offset(cfg, "rhythm_c") == state_offset(cfg, "rhythm_h") + 8
    _assert_parity(model, cfg, vocab, cello_dir, dirs, tmp_path)


def test_match_lengths_count_the_equal_steps_up_to_each_pair():
    from trainer.layers import match_lengths

    rng = np.random.default_rng(0)
    pitch = rng.integers(2, 4, (2, 40))  # two notes, two lengths: long matches happen
    duration = rng.integers(2, 4, (2, 40))
    got = np.asarray(match_lengths(pitch, duration, 5))
    for b in range(2):
        for t in range(40):
            for s in range(40):
                n = 0
                while (n < 5 and min(t, s) - n >= 0 and pitch[b, t - n] == pitch[b, s - n]
                       and duration[b, t - n] == duration[b, s - n]):
                    n += 1
                assert got[b, t, s] == n
    assert got.max() == 5


def _meta(folder: Path, cfg, key: Key) -> None:
    from trainer.model import state_offset

    table = KeyTable(state_offset(cfg, "key"), ((key, 1),), hypotheses([key], -6, 5))
    (folder / "meta.json").write_text(json.dumps({"format_version": FORMAT_VERSION,
                                                  "keys": table.to_meta()}))


def test_the_step_model_reads_its_key_and_answers_both_joinings(vocab, cello_dir, dirs,
                                                                 tmp_path):
    from playbach.stepmodel import StepModel
    from trainer.export import check_parity, to_tflite
    from trainer.model import build_model

    cfg = make_config("tiny", [])
    model = build_model(vocab, cfg)
    for w in model.weights:  # a trained network's differences, not a fresh one's zeros
        if w.path in ("join_shift/shift", "key_prior/table"):
            w.assign(np.random.default_rng(1).normal(0, 1, w.shape).astype("float32"))
    (tmp_path / "step.tflite").write_bytes(to_tflite(model, cfg, vocab)[0])
    (tmp_path / "vocab.json").write_text(vocab.to_json())
    tokens = _tokens(vocab, cello_dir, dirs)
    _meta(tmp_path, cfg, piece_key(tokens))
    assert check_parity(model, tmp_path, tokens)["max_logit_diff"] < 1e-4  # in G major
    step = StepModel(tmp_path)
    assert step.joins and step.keys.commonest == piece_key(tokens)
    ids = tuple(int(i) for i in tokens[1, :3])
    (g_major, _, _), _ = step.step(ids, step.initial_state())
    (d_minor, _, _), _ = step.step(ids, step.initial_state(Key(50, 1)))
    assert g_major.shape == (2, vocab.sizes[0])  # a new event's pitch, a joined note's
    assert np.abs(g_major[0] - g_major[1]).max() > 0.1
    assert np.abs(g_major - d_minor).max() > 0.1  # the key is read from the state


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
