"""Arithmetic exact match: the strict answer parser, Wilson and Newcombe paired intervals, a tiny model's run."""

import math

import pytest

from compressor.measure import arithmetic
from tests.helpers import tiny_llama


@pytest.mark.parametrize("text,expected", [
    ("174", "174"), (" 174", "174"), ("174\n27+58=85", "174"), (" 85 apples", "85"), ("Answer: 12", "12"),
    ("answer is 12.", "12"), ("The answer is 85.", "85"), ("= 99\n", "99"), ("1,234", "1234"),
    (" 1,234 coins", "1234"), ("\n\n 42\n", "42"), ("-7", "-7"), ("\u22127", "-7"), ("085", "85"),
    ("85, apples", "85"), ("(85)", "85"), ("85. Next: 27+58=85", "85"),  # a new sentence may follow
])
def test_parse_answer_handles_the_formats_models_emit(text, expected):
    assert arithmetic.parse_answer(text) == expected


@pytest.mark.parametrize("text", [
    "", "   \n", "apples", "The king said",
    "85.7", "85.9 apples", ".85", "3.85",  # a decimal is a different number
    "85 or 86", "85, 86, 87", "12, 34", "85 or \u0668\u0666",  # several candidates in one sentence
    "85-3=82", "85 - 3 = 82", "85%", "85th", "x85",  # the token goes on past the integer
    "1,23", "1,234,5",  # not thousands groups: never 1, 123 or 1234
    "\u0668\u0665", "\uff18\uff15",  # 85 in Arabic-Indic and full-width digits: not ASCII
])
def test_parse_answer_refuses_decimals_candidates_and_other_scripts(text):
    assert arithmetic.parse_answer(text) is None


Z = 1.959963984540054  # the 97.5% normal quantile


@pytest.mark.parametrize("k,n,expected", [
    (8, 8, (8 / (8 + Z**2), 1.0)),  # by hand: at k = n the lower end is n / (n + z^2)
    (0, 10, (0.0, Z**2 / (10 + Z**2))),  # by hand: at k = 0 the upper end is z^2 / (n + z^2)
    # Newcombe 1998, Stat Med 17:857-872, Table II, method 3 (Wilson score), to 4 decimals
    (81, 263, (0.2553, 0.3662)), (15, 148, (0.0624, 0.1605)), (0, 20, (0.0, 0.1611)), (1, 29, (0.0061, 0.1718)),
])
def test_wilson_interval_matches_hand_and_published_values(k, n, expected):
    lo, hi = arithmetic.wilson_ci([1] * k + [0] * (n - k))
    assert lo == pytest.approx(expected[0], abs=5e-5) and hi == pytest.approx(expected[1], abs=5e-5)
    assert lo < hi  # never zero width, also at 0% and 100%
    assert all(math.isnan(v) for v in arithmetic.wilson_ci([]))


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
    lo, hi = arithmetic.paired_diff_ci(a, b)
    assert lo == pytest.approx(expected[0], abs=5e-5) and hi == pytest.approx(expected[1], abs=5e-5)


def test_paired_difference_is_oriented_b_minus_a_and_brackets_the_estimate():
    a, b = _paired(36, 12, 2, 0)  # b right 48 times, a right 38 times: b - a = +0.2
    lo, hi = arithmetic.paired_diff_ci(a, b)
    assert 0 < lo < 0.2 < hi < 1
    assert arithmetic.paired_diff_ci(b, a) == pytest.approx((-hi, -lo))
    assert all(math.isnan(v) for v in arithmetic.paired_diff_ci([1, 0], [1]))


def test_arithmetic_exact_match_on_a_tiny_model_runs_and_counts():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(["<pad>"] + list("0123456789+-= ,:Answer"))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>")
    problems = [{"prompt": "12+3=", "answer": "15", "kind": "add2"}, {"prompt": "4+4=", "answer": "8", "kind": "add1"}]
    res = arithmetic.evaluate_arithmetic(tiny_llama(vocab=256), tok, problems)
    assert res["n"] == 2 and len(res["correct"]) == 2 and set(res["by_kind"]) == {"add1", "add2"}
    assert res["accuracy"] == sum(res["correct"]) / 2
