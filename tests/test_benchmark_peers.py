"""The JoeyNMT comparison's pieces (benchmarks/peers/): the analytic model against the real ones, the shared
segmentation, the patches and the settings both toolkits get. Nothing here downloads or installs anything:
the JoeyNMT checks run only where JoeyNMT is importable or the benchmark's environment already exists."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from benchmarks.peers import joeynmt as bench
from benchmarks.peers.model import Counts, Dims, forward_macs, parameter_count, training_flops
from rnnkit.seq2seq import Seq2Seq, Seq2SeqConfig

TINY = Dims(source_vocab=30, target_vocab=40, embedding=8, encoder_hidden=6, decoder_hidden=12)


def _rnnkit_model(dims: Dims) -> Seq2Seq:
    """The model as ``rnnkit train translate`` builds it from the benchmark's flags."""
    torch.manual_seed(0)
    return Seq2Seq.build(Seq2SeqConfig(dims.source_vocab, dims.target_vocab, embedding_size=dims.embedding,
                                       hidden_size=dims.decoder_hidden, cell="gru", decoder="luong",
                                       attention="additive", input_feeding=True))


def _flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_parameter_count_matches_rnnkits_model():
    for dims in (TINY, Dims(8000, 8000)):
        model = _rnnkit_model(dims)
        assert sum(p.numel() for p in model.parameters()) == parameter_count(dims, "rnnkit")["total"]
    assert parameter_count(Dims(8000, 8000), "rnnkit")["total"] == 12_270_912  # issue 21's model, ~12.3M


def test_the_benchmark_flags_build_that_model(tmp_path):
    """``rnnkit train translate`` with the benchmark's flags (one step) builds the model counted on paper."""
    from rnnkit.cli import main as rnnkit_main
    from rnnkit.tasks import translate

    for split in ("train", "dev"):
        (tmp_path / f"{split}.tsv").write_text("a b\tX Y\nb c\tY Z\nc a b\tZ X\n")
    sizes = dict(bench.QUICK, embedding=TINY.embedding, encoder_hidden=TINY.encoder_hidden,
                 decoder_hidden=TINY.decoder_hidden, budget=60.0, dev=3)
    args = bench.rnnkit_train_args(tmp_path, tmp_path / "run", sizes, lr=1e-3)
    assert rnnkit_main([*args, "--max-steps", "1"]) == 0
    model = translate.load(tmp_path / "run").model
    dims = Dims(model.encoder.embedding.num_embeddings, model.decoder.embedding.num_embeddings,
                TINY.embedding, TINY.encoder_hidden, TINY.decoder_hidden)
    assert (dims.source_vocab, dims.target_vocab) == (4 + 3, 4 + 3)  # the specials and the words a b c / X Y Z
    assert sum(p.numel() for p in model.parameters()) == parameter_count(dims, "rnnkit")["total"]
    full = bench.rnnkit_train_args(tmp_path, tmp_path, dict(bench.FULL), 1e-3)
    assert [_flag(full, name) for name in ("--embedding-size", "--hidden-size", "--batch-size")] == ["256", "512", "64"]


def test_joeynmt_config_gets_the_same_settings(tmp_path):
    corpus = bench.Corpus(tmp_path, ["a"], ["A"], None, Counts.of([(1, 2)]), {})
    config = bench.joeynmt_config(corpus, tmp_path, dict(bench.FULL), lr=1e-3, beam=5, max_len=30)
    args = bench.rnnkit_train_args(tmp_path, tmp_path / "run", dict(bench.FULL), lr=1e-3)
    training, model = config["training"], config["model"]
    assert training["learning_rate"] == float(_flag(args, "--lr"))
    assert training["batch_size"] == int(_flag(args, "--batch-size")) and training["batch_type"] == "sentence"
    assert training["clip_grad_norm"] == float(_flag(args, "--clip-grad-norm"))
    assert training["normalization"] == "tokens"
    assert training["validation_freq"] >= 10**9 and training["label_smoothing"] == 0.0
    assert model["encoder"]["hidden_size"] * 2 == model["decoder"]["hidden_size"] == int(_flag(args, "--hidden-size"))
    assert model["encoder"]["embeddings"]["embedding_dim"] == int(_flag(args, "--embedding-size"))
    assert model["decoder"]["attention"] == "bahdanau" and model["decoder"]["input_feeding"] is True
    assert config["data"]["src"]["level"] == config["data"]["trg"]["level"] == "word"


def test_training_flops_match_torchs_flop_counter():
    """The analytic FLOPs of a training step against torch.utils.flop_counter on rnnkit's model, reference
    path (every RNN stepped with autograd's mm), sentences of one length (where padding cannot differ)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = _rnnkit_model(TINY)
    for rnn in (model.encoder.rnn, model.decoder.rnn):
        rnn.use_fused, rnn.use_fast_path = False, False
    batch, source_length, target_length = 3, 5, 4
    generator = torch.Generator().manual_seed(0)
    src = torch.randint(4, TINY.source_vocab, (batch, source_length), generator=generator)
    tgt_in = torch.randint(4, TINY.target_vocab, (batch, target_length), generator=generator)
    tgt_out = torch.randint(4, TINY.target_vocab, (batch, target_length), generator=generator)
    counter = FlopCounterMode(display=False)
    with counter:
        logits = model(src, torch.full((batch,), source_length), tgt_in)  # (B, T, V)
        F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten()).backward()
    # the encoder's zero initial state needs no gradient: torch skips dL/dh_0, one product per direction
    skipped = 2 * 2 * batch * model.encoder.rnn.weight_hh_l0.numel()
    # the attention score's backward multiplies its gradient by v elementwise inside the tanh's backward
    # (rnnkit.attention.tanh_score), where the analytic count has the (B S, 1) x (1, A) product of a Linear
    elementwise = 2 * batch * source_length * model.decoder.attention.attention_size * target_length
    counts = Counts.of([(source_length, target_length)] * batch)
    assert training_flops(TINY, counts) == counter.get_total_flops() + skipped + elementwise


def test_flops_count_real_tokens_and_attention_pairs():
    counts = Counts.of([(2, 3), (5, 1)])
    assert counts == Counts(sentences=2, source_tokens=7, target_tokens=4, attention_pairs=11)
    macs = forward_macs(TINY, counts)
    h, k = TINY.decoder_hidden, TINY.keys
    assert macs["output layer"] == 4 * TINY.target_vocab * h
    assert macs["attention"] == 7 * h * k + 4 * h * h + 11 * (h + k)


def _joeynmt_count(dims: Dims, tmp_path) -> dict:
    """JoeyNMT's model at ``dims`` counted in this process if JoeyNMT is importable, else in the benchmark's
    environment if it exists; otherwise skip (installing it is the benchmark's job, not a test's)."""
    if importlib.util.find_spec("joeynmt") is not None:
        from benchmarks.peers import joeynmt_runner

        model = joeynmt_runner.build(dims)
        return {"parameters": joeynmt_runner.parameters(model), "flops": joeynmt_runner.flop_check(model)}
    python = bench.default_venv() / "bin" / "python"
    if not (bench.default_venv() / ".installed").exists():
        pytest.skip(f"JoeyNMT is neither importable nor installed in {bench.default_venv()}")
    report = tmp_path / "count.json"
    dims_arg = ",".join(str(n) for n in (dims.source_vocab, dims.target_vocab, dims.embedding,
                                         dims.encoder_hidden, dims.decoder_hidden))
    subprocess.run([str(python), str(bench.RUNNER), "count", "--dims", dims_arg, "--report", str(report)],
                   check=True, capture_output=True, timeout=300)
    return json.loads(report.read_text())


def test_the_two_models_agree_but_for_three_biases(tmp_path):
    rnnkit_total = sum(p.numel() for p in _rnnkit_model(TINY).parameters())
    joeynmt = _joeynmt_count(TINY, tmp_path)
    assert joeynmt["parameters"]["total"] == parameter_count(TINY, "joeynmt")["total"]
    # rnnkit has b_k (A = H) and b_o (V_t); JoeyNMT has b_c (H)
    assert rnnkit_total - joeynmt["parameters"]["total"] == TINY.target_vocab
    assert joeynmt["flops"]["counted"] == joeynmt["flops"]["analytic"]


@pytest.mark.parametrize("units, texts", [
    ("symbols", ["AH B R IY", "B R IY Z", "AH B AH", "Z IY"] * 5),
    ("text", ["the cat sat", "a cat", "the mat sat"] * 5),
])
def test_segmentation_round_trips(units, texts):
    side = bench.Side(units, texts, vocab_size=20)
    for text in texts:
        pieces = side.pieces(text)
        assert pieces and all(" " not in piece and piece for piece in pieces)
        assert side.join(pieces) == text
    if units == "symbols":
        assert any(bench._JOIN in piece for text in texts for piece in side.pieces(text)), "pieces span symbols"
        assert side.pieces("AH QQ") == ["AH", "<unk>"]  # a symbol never seen in training


def test_prepare_corpus_writes_the_same_tokens_for_both(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    pairs = {"train": [("abba", "AE B AH"), ("abbey", "AE B IY"), ("bay", "B EY")] * 10,
             "valid": [("abb", "AE B")], "test": [("baby", "B EY B IY"), ("ab", "AE B")]}
    for split, rows in pairs.items():
        (data / f"{split}.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in rows))
    corpus = bench.prepare_corpus(str(data), tmp_path / "out", bpe=30, units=("text", "symbols"), dev=5, test=5)
    out = tmp_path / "out"
    for split in ("train", "dev", "test"):
        tsv = [line.split("\t") for line in (out / f"{split}.tsv").read_text().splitlines()]
        assert [s for s, _ in tsv] == (out / f"{split}.src").read_text().splitlines()
        assert [t for _, t in tsv] == (out / f"{split}.trg").read_text().splitlines()
    assert corpus.references == ["B EY B IY", "AE B"] and corpus.sizes == {"train": 30, "dev": 1, "test": 2}
    assert corpus.counts.sentences == 30
    assert corpus.counts.target_tokens == sum(len(t.split()) + 1 for t in (out / "train.trg").read_text().splitlines())
    hypotheses = (out / "test.trg").read_text().splitlines()  # a perfect system's output
    assert bench.scores(corpus, hypotheses)["exact"] == 1.0
    assert bench.scores(corpus, hypotheses)["per"] == 0.0
    half = bench.scores(corpus, ["B_EY", "AE_B"])  # the first misses two of its four phonemes
    assert half["exact"] == 0.5 and half["per"] == pytest.approx(2 / 6)


def test_patches_apply_once_and_refuse_another_version(tmp_path):
    for patch in bench.PATCHES:
        path = tmp_path / patch.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"before\n{patch.old}after\n")
    assert bench.apply_patches(tmp_path) == [f"{p.path}: applied" for p in bench.PATCHES]
    patched = {p.path: (tmp_path / p.path).read_text() for p in bench.PATCHES}
    assert bench.apply_patches(tmp_path) == [f"{p.path}: already applied" for p in bench.PATCHES]
    assert patched == {p.path: (tmp_path / p.path).read_text() for p in bench.PATCHES}
    assert patched == {p.path: f"before\n{p.new}after\n" for p in bench.PATCHES}
    (tmp_path / bench.PATCHES[0].path).write_text("something else\n")
    with pytest.raises(RuntimeError, match="another JoeyNMT version"):
        bench.apply_patches(tmp_path)


def test_rnnkit_child_runs_as_the_rnnkit_command(tmp_path):
    """The rnnkit side runs in its own process, as the ``rnnkit`` command does: subnormal floats flushed before
    anything computes (rnnkit.denormals), and its peak RSS reported."""
    from benchmarks.harness import ROOT

    report = tmp_path / "rss.json"
    subprocess.run([sys.executable, "-m", "benchmarks.peers.joeynmt", "--child-rnnkit", str(report), "--", "data",
                    "list"], cwd=ROOT, check=True, capture_output=True, timeout=300)
    figures = json.loads(report.read_text())
    assert figures["peak_rss_mib"] > 0 and figures["threads"] >= 1
    assert figures["subnormals_flushed"] is True


def test_joeynmt_environment_pins_rnnkits_torch():
    """The venv's constraints pin the torch that rnnkit pins (an unpinned torch pulls a multi-GB CUDA build)."""
    from benchmarks.harness import ROOT

    pins = [line.strip() for line in (ROOT / "constraints.txt").read_text().splitlines()]
    assert bench.TORCH in pins and bench.JOEYNMT == "joeynmt==2.3.0"
