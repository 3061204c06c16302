"""Greedy generation, chat prompts, and the positions a model may be fed: what samples, arithmetic and
the prompt box share."""

from __future__ import annotations

import torch

from compressor.engine.text import leading_bos
from compressor.errors import LabError
from compressor.measure.settings import EvalSettings


def has_chat_template(tokenizer) -> bool:
    """True when the tokenizer carries a chat template (an instruct model): prompts go through it."""
    return isinstance(getattr(tokenizer, "chat_template", None), str) and bool(tokenizer.chat_template)


def chat_prompt(tokenizer, user: str, prefill: str = "") -> str:
    """`user` as one user turn through the tokenizer's chat template, the assistant's turn opened, and
    `prefill` as the start of its answer ("3 + 4 =" makes the next token the answer). The template's
    own BOS is dropped when the tokenizer adds one anyway, so a prompt never starts with two."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                         add_generation_prompt=True)
    bos = getattr(tokenizer, "bos_token", None)
    if bos and leading_bos(tokenizer) is not None and text.startswith(bos):
        text = text[len(bos):]
    return text + prefill


def max_positions(model) -> int | None:
    """The positions a model was trained for (`config.max_position_embeddings`), None when it declares none."""
    n = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else None


@torch.no_grad()
def greedy_generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 32,
                    stop_at_eos: bool | None = None) -> list[str]:
    """Greedy continuations (text only, prompt removed), batched with left padding.

    Every row runs `max_new_tokens` steps (the same work whatever the answers). With `stop_at_eos`
    (default: when the tokenizer has a chat template) each text ends where the model first wrote the
    EOS token, its end of turn: what follows is the model starting a conversation of its own
    ("Paris.<|im_end|>\n<|im_start|>system ..."), which is no part of its answer."""
    stop = tokenizer.eos_token_id if (has_chat_template(tokenizer) if stop_at_eos is None else stop_at_eos) else None
    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    out = []
    try:
        for i in range(0, len(prompts), batch_size):
            # special tokens as the tokenizer adds them by default: prompts look like a user's
            enc = tokenizer(prompts[i : i + batch_size], return_tensors="pt", padding=True).to(device)
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=None,
                                 temperature=None, top_p=None, top_k=None)
            new = gen[:, enc["input_ids"].shape[1] :].tolist()  # (B, max_new_tokens)
            if stop is not None:
                new = [row[: row.index(stop)] if stop in row else row for row in new]
            out += tokenizer.batch_decode(new, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return out


def check_positions(model, tokenizer, settings: EvalSettings, n_tokens: int, prompts: list[str]) -> None:
    """Refuse evaluation lengths beyond the positions the model was trained for, whose numbers would
    measure extrapolation (RoPE) or fail (learned positions), not the model.

    Checked: the longest perplexity window (min(context, n_tokens) tokens, plus the BOS that
    window_logprobs prepends when the tokenizer leads with one), the speed test's prompt + new
    tokens, and the longest sample prompt + max_new_tokens.
    """
    max_pos = max_positions(model)
    if max_pos is None:
        return  # no learned limit to check against
    where = f"the model's max_position_embeddings={max_pos}"
    lead = 0 if leading_bos(tokenizer) is None else 1
    window = min(settings.context, n_tokens) + lead
    if window > max_pos:
        bos = " (with the BOS token prepended to each window)" if lead else ""
        raise LabError(f"eval setting context={settings.context} feeds {window} positions per window{bos}, beyond "
                       f"{where}: use context <= {max_pos - lead}.")
    speed = settings.speed_prompt_tokens + settings.speed_new_tokens
    if speed > max_pos:
        raise LabError(f"eval settings speed_prompt_tokens={settings.speed_prompt_tokens} + speed_new_tokens="
                       f"{settings.speed_new_tokens} = {speed} positions, beyond {where}: use speed_prompt_tokens "
                       f"<= {max_pos - settings.speed_new_tokens}.")
    longest = max((len(tokenizer(p)["input_ids"]) for p in prompts), default=0)
    if prompts and longest + settings.max_new_tokens > max_pos:
        raise LabError(f"eval setting max_new_tokens={settings.max_new_tokens} after a sample prompt of {longest} "
                       f"tokens reaches {longest + settings.max_new_tokens} positions, beyond {where}: use "
                       f"max_new_tokens <= {max_pos - longest}.")
