"""Quality metrics on known cases, speed and memory measurement on a tiny Llama."""

import math

import pytest
import torch
import torch.nn.functional as F

from compressor.errors import LabError
from compressor.measure import evaluate as ev
from compressor.measure.speed import kv_bytes_per_token_from_config, measure_speed, peak_memory
from tests.helpers import random_tokens, tiny_llama


def test_uniform_distribution_perplexity_equals_vocab_size():
    model = tiny_llama(vocab=256)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every logit 0: the next-token distribution is uniform
    tokens = random_tokens(1, 200)[0]
    res, _ = ev.evaluate_quality(model, tokens, context=64, stride=32)
    assert res.perplexity == pytest.approx(256, rel=1e-5)
    assert res.n_tokens == 199  # every position after the first, scored once
    logp = torch.full((10, 50), -math.log(50))
    assert ev.perplexity_from_logprobs(logp, torch.zeros(10, dtype=torch.long)) == pytest.approx(50)


@pytest.mark.parametrize("n,context,stride", [(200, 64, 32), (100, 100, 50), (257, 64, 64), (10, 64, 16)])
def test_sliding_windows_score_each_position_once(n, context, stride):
    scored = []
    for begin, end, k in ev.sliding_windows(n, context, stride):
        assert end - begin <= context and k <= end - begin - (1 if begin == 0 else 0)
        scored += list(range(end - k, end))
    assert scored == list(range(1, n))


def test_kl_of_identical_models_is_zero_and_positive_when_perturbed():
    model = tiny_llama()
    tokens = random_tokens(1, 160)[0]
    base, ref = ev.evaluate_quality(model, tokens, context=64, stride=32, top_k=16)
    same, _ = ev.evaluate_quality(model, tokens, context=64, stride=32, top_k=16, reference=ref)
    assert same.kld == pytest.approx(0.0, abs=1e-6)
    assert same.top1_agreement == 1.0
    assert same.perplexity == pytest.approx(base.perplexity)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.down_proj.weight.add_(torch.randn_like(layer.mlp.down_proj.weight) * 0.5)
    moved, _ = ev.evaluate_quality(model, tokens, context=64, stride=32, top_k=16, reference=ref)
    assert moved.kld > 1e-3
    assert moved.top1_agreement < 1.0


def test_topk_kl_is_a_lower_bound_and_exact_with_full_vocabulary():
    g = torch.Generator().manual_seed(0)
    logp = F.log_softmax(torch.randn(20, 64, generator=g) * 2, -1)
    logq = F.log_softmax(torch.randn(20, 64, generator=g) * 2, -1)
    full = (logp.exp() * (logp - logq)).sum(-1)
    exact = ev.kl_topk(*ev.topk_summary(logp, 64), logq)
    assert torch.allclose(exact, full, atol=1e-5)
    bound = ev.kl_topk(*ev.topk_summary(logp, 8), logq)
    assert (bound <= full + 1e-6).all() and (bound > 0).all()


def test_reference_round_trips_through_json_dict():
    model = tiny_llama()
    _, ref = ev.evaluate_quality(model, random_tokens(1, 100)[0], context=64, stride=32, top_k=8)
    back = ev.Reference.from_dict(ref.to_dict())
    assert torch.equal(back.top_ids, ref.top_ids) and torch.equal(back.top_logp, ref.top_logp)
    assert back.n_tokens == ref.n_tokens == 99


@pytest.mark.parametrize("text,expected", [
    ("174", "174"), (" 174", "174"), ("174\n27+58=85", "174"), (" 85 apples", "85"), ("Answer: 12", "12"),
    ("answer is 12.", "12"), ("The answer is 85.", "85"), ("= 99\n", "99"), ("1,234", "1234"),
    (" 1,234 coins", "1234"), ("\n\n 42\n", "42"), ("-7", "-7"), ("\u22127", "-7"), ("085", "85"),
    ("85, apples", "85"), ("(85)", "85"), ("85. Next: 27+58=85", "85"),  # a new sentence may follow
])
def test_parse_answer_handles_the_formats_models_emit(text, expected):
    assert ev.parse_answer(text) == expected


@pytest.mark.parametrize("text", [
    "", "   \n", "apples", "The king said",
    "85.7", "85.9 apples", ".85", "3.85",  # a decimal is a different number
    "85 or 86", "85, 86, 87", "12, 34", "85 or \u0668\u0666",  # several candidates in one sentence
    "85-3=82", "85 - 3 = 82", "85%", "85th", "x85",  # the token goes on past the integer
    "1,23", "1,234,5",  # not thousands groups: never 1, 123 or 1234
    "\u0668\u0665", "\uff18\uff15",  # 85 in Arabic-Indic and full-width digits: not ASCII
])
def test_parse_answer_refuses_decimals_candidates_and_other_scripts(text):
    assert ev.parse_answer(text) is None


Z = 1.959963984540054  # the 97.5% normal quantile


@pytest.mark.parametrize("k,n,expected", [
    (8, 8, (8 / (8 + Z**2), 1.0)),  # by hand: at k = n the lower end is n / (n + z^2)
    (0, 10, (0.0, Z**2 / (10 + Z**2))),  # by hand: at k = 0 the upper end is z^2 / (n + z^2)
    # Newcombe 1998, Stat Med 17:857-872, Table II, method 3 (Wilson score), to 4 decimals
    (81, 263, (0.2553, 0.3662)), (15, 148, (0.0624, 0.1605)), (0, 20, (0.0, 0.1611)), (1, 29, (0.0061, 0.1718)),
])
def test_wilson_interval_matches_hand_and_published_values(k, n, expected):
    lo, hi = ev.wilson_ci([1] * k + [0] * (n - k))
    assert lo == pytest.approx(expected[0], abs=5e-5) and hi == pytest.approx(expected[1], abs=5e-5)
    assert lo < hi  # never zero width, also at 0% and 100%
    assert all(math.isnan(v) for v in ev.wilson_ci([]))


def _paired(n11, n12, n21, n22):
    """Outcome lists (a, b) for a paired table: n11 both right, n12 only b right, n21 only a right."""
    a = [1] * n11 + [0] * n12 + [1] * n21 + [0] * n22
    b = [1] * n11 + [1] * n12 + [0] * n21 + [0] * n22
    return a, b


@pytest.mark.parametrize("table,expected", [
    # by hand: identical outcomes on 8 items make a margin 0, so phi = 0 and both ends are
    # +-(1 - Wilson lower of 8/8) = +-z^2 / (8 + z^2)
    ((8, 0, 0, 0), (-Z**2 / (8 + Z**2), Z**2 / (8 + Z**2))),
    ((0, 0, 0, 10), (-Z**2 / (10 + Z**2), Z**2 / (10 + Z**2))),
    # Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables" (2017), ch. 8, Cavo et al.
    # (2012) table [[59, 6], [16, 80]]: Newcombe square-and-add -0.0621 (95% CI -0.1186 to -0.0046), as
    # their R package contingencytables asserts in tests/testthat/test-ch8.R
    ((59, 6, 16, 80), (-0.1186, -0.0046)),
])
def test_paired_difference_is_newcombes_score_interval(table, expected):
    a, b = _paired(*table)
    lo, hi = ev.paired_diff_ci(a, b)
    assert lo == pytest.approx(expected[0], abs=5e-5) and hi == pytest.approx(expected[1], abs=5e-5)


def test_paired_difference_is_oriented_b_minus_a_and_brackets_the_estimate():
    a, b = _paired(36, 12, 2, 0)  # b right 48 times, a right 38 times: b - a = +0.2
    lo, hi = ev.paired_diff_ci(a, b)
    assert 0 < lo < 0.2 < hi < 1
    assert ev.paired_diff_ci(b, a) == pytest.approx((-hi, -lo))
    assert all(math.isnan(v) for v in ev.paired_diff_ci([1, 0], [1]))


def test_arithmetic_exact_match_on_a_tiny_model_runs_and_counts():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(["<pad>"] + list("0123456789+-= ,:Answer"))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>")
    problems = [{"prompt": "12+3=", "answer": "15", "kind": "add2"}, {"prompt": "4+4=", "answer": "8", "kind": "add1"}]
    res = ev.evaluate_arithmetic(tiny_llama(vocab=256), tok, problems)
    assert res["n"] == 2 and len(res["correct"]) == 2 and set(res["by_kind"]) == {"add1", "add2"}
    assert res["accuracy"] == sum(res["correct"]) / 2


def test_eval_settings_bounds_name_the_setting():
    with pytest.raises(LabError, match="context"):
        ev.EvalSettings(context=100_000)
    with pytest.raises(LabError, match="stride"):
        ev.EvalSettings(context=64, stride=128)
    with pytest.raises(LabError, match="unknown"):
        ev.EvalSettings.from_dict({"contxt": 64})


def test_online_extras_say_why_they_did_not_run_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = ev.online_extras(tiny_llama(), None, ev.EvalSettings())
    assert set(out) == {"wikitext2", "gsm8k", "lm_eval"}
    assert all(v["status"].startswith("skipped") for v in out.values())


def test_speed_and_kv_bytes_on_a_tiny_model():
    model = tiny_llama(kv_heads=2)
    res = measure_speed(model, 256, prompt_tokens=16, new_tokens=4, batches=(1, 2), repeats=2)
    for b in ("1", "2"):
        for key in ("prefill_tokens_per_s", "decode_tokens_per_s", "time_to_first_token_s"):
            s = res["by_batch"][b][key]
            assert s["min"] <= s["median"] <= s["max"] and s["n"] == 2
    # 2 layers x 2 kv heads x head_dim 32 x (K, V) x 4 bytes, from the config and from the real cache
    assert kv_bytes_per_token_from_config(model.config) == 2 * 2 * 32 * 2 * 4
    assert res["kv_bytes_per_token_measured"] == 2 * 2 * 32 * 2 * 4
    assert res["peak_memory_bytes"] > 0


def test_peak_memory_sees_an_allocation():
    with peak_memory("cpu") as mem:
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        x += 1
        del x
    assert mem["peak_memory_delta_bytes"] >= 48 * 2**20


@pytest.mark.parametrize("n, context, stride", [(1000, 256, 128), (1000, 256, 256), (513, 256, 256), (10, 4, 1)])
def test_sliding_windows_score_every_position_once(n, context, stride):
    from compressor.measure.evaluate import sliding_windows

    scored = []
    for begin, end, n_scored in sliding_windows(n, context, stride):
        assert end - begin <= context and n_scored <= end - begin - 1  # each target has context
        scored += range(end - n_scored, end)
    assert scored == list(range(1, n))
