"""The evaluation data follows the model: the demo's tokenizer keeps the demo's data exactly, a chat
template sends every prompt through it, other models get few-shot arithmetic; the text is chosen with it."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from compressor.measure import evaldata
from compressor.measure.evaldata import eval_profile, load_eval_data
from compressor.measure.generation import chat_prompt, greedy_generate
from compressor.measure.quality import eval_tokens
from compressor.measure.settings import EvalSettings
from compressor.models.loading import DEMO_DIR

TEMPLATE = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def _byte_tokenizer(chat: bool, bos: str | None = None) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer built in code: not the demo's vocabulary; with a chat template or without."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {c: i for i, c in enumerate(sorted(alphabet))} | {"<s>": len(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="<s>", pad_token="<s>")
    if bos is not None:  # a tokenizer that adds BOS in front of every text, and a template that writes it too
        from tokenizers import processors

        fast.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    if chat:
        fast.chat_template = (bos or "") + TEMPLATE
    return fast


def test_the_demo_model_is_measured_on_exactly_the_data_it_always_was():
    tok = AutoTokenizer.from_pretrained(DEMO_DIR)
    settings = EvalSettings(ppl_tokens=256, arithmetic_samples=40)
    data = load_eval_data(tok, settings)
    assert data.profile.name == "lab" and data.profile.to_dict()["text"].startswith("Python standard-library")
    text = evaldata.held_out_text()
    assert data.tokens.tolist() == eval_tokens(tok, text[: 256 * evaldata.CHARS_PER_TOKEN], 256).tolist()
    assert data.problems == evaldata.load_arithmetic()[:40]
    assert data.prompts == evaldata.load_prompts() == data.labels


def test_a_chat_model_gets_templated_prompts_news_text_and_single_digit_arithmetic():
    tok = _byte_tokenizer(chat=True)
    data = load_eval_data(tok, EvalSettings(ppl_tokens=128, arithmetic_samples=100))
    assert data.profile.name == "chat" and "tz database NEWS" in data.profile.text
    assert tok.decode(data.tokens).startswith(evaldata.news_text()[:40])
    first = data.problems[0]
    a, op, b = evaldata.single_digit_problems()[0]
    assert first["prompt"] == f"<|user|>Calculate {a} {op} {b}.\n<|assistant|>{a} {op} {b} ="
    assert {p["kind"] for p in data.problems} == {"add1", "sub1"} and len(data.problems) == 100
    assert data.labels == evaldata.load_prompts(evaldata.EVAL_DIR / "prompts_chat.json")
    assert all(p == f"<|user|>{u}\n<|assistant|>" for p, u in zip(data.prompts, data.labels, strict=True))


def test_a_model_without_a_template_gets_few_shot_arithmetic():
    data = load_eval_data(_byte_tokenizer(chat=False), EvalSettings(ppl_tokens=128, arithmetic_samples=10))
    assert data.profile.name == "base" and data.prompts == evaldata.load_prompts()
    assert data.problems[0]["prompt"].startswith("Q: What is 2 + 5?\nA: 7\n\nQ: What is 9 - 4?\nA: 5\n\n")
    assert data.problems[0]["prompt"].endswith("?\nA:")


def test_the_single_digit_problems_are_all_of_them_once_with_right_answers():
    problems = evaldata.single_digit_problems()
    assert len(problems) == len(set(problems)) == 155
    rows = evaldata.chat_arithmetic(_byte_tokenizer(chat=True))
    assert all(int(r["answer"]) == eval(r["question"].removeprefix("Calculate ").rstrip(".")) for r in rows)
    assert 0.5 < sum(r["kind"] == "add1" for r in rows[:100]) / 100 < 0.8  # any prefix mixes both kinds


@pytest.mark.parametrize("adds_bos", [False, True])
def test_a_chat_prompt_never_starts_with_two_bos(adds_bos):
    tok = _byte_tokenizer(chat=True, bos="<s>" if adds_bos else None)
    ids = tok(chat_prompt(tok, "hi"))["input_ids"]
    assert ids.count(tok.bos_token_id) == (1 if adds_bos else 0)
    assert eval_profile(tok).name == "chat"


class _Scripted(torch.nn.Module):
    """A 'model' whose generate appends fixed ids: what greedy_generate does with them is under test."""

    def __init__(self, tail: list[int]):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.tail = tail

    def generate(self, input_ids, max_new_tokens, **_):
        tail = torch.tensor([self.tail[:max_new_tokens]] * input_ids.shape[0])
        return torch.cat([input_ids, tail], dim=1)


@pytest.mark.parametrize("chat, expect", [(True, "hi"), (False, "hiyo")])
def test_a_chat_answer_ends_at_the_end_of_its_turn(chat, expect):
    tok = _byte_tokenizer(chat=chat)
    ids = tok("hi", add_special_tokens=False)["input_ids"] + [tok.eos_token_id] + \
        tok("yo", add_special_tokens=False)["input_ids"]
    out = greedy_generate(_Scripted(ids), tok, ["a", "b"], max_new_tokens=5)
    assert out == [expect, expect]
