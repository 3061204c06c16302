"""Train the bundled demo model: a small LlamaForCausalLM, on CPU, from public-domain text.

Reproducible: fixed seed, fixed step budget. Data, read at build time and never committed:
  - King James Bible, from Debian's `bible-kjv` (the `bible` command prints it);
  - World English Bible, from Debian's `sword-text-web`, dumped with `mod2imp` (`libsword-utils`);
  - the first chapters of Moby Dick shipped in Debian's `r-cran-tokenizers` (test data);
  - the training half of the Python standard library's docstrings (see compressor/measure/evaldata.py);
  - synthetic arithmetic from compressor/measure/evaldata.py, held-out problems excluded.

Set-up on a fresh Debian machine (the script runs these when --fetch is given):
  apt-get install -y bible-kjv libsword-utils
  apt-get download sword-text-web r-cran-tokenizers && dpkg-deb -x <each>.deb <dir>

Run (the bundled model was made by these two commands, about 83 minutes on a busy 2-core CPU):
  python -m scripts.train_demo_model --fetch --out /tmp/phase1 --steps 1200 --stop-after 800
  python -m scripts.train_demo_model --init-from /tmp/phase1 --out assets/models/lab-llama-7m \\
      --steps 450 --arith-share 0.6 --lr 1e-3 --answer-loss-only --eval-every 50
Digits are split into single tokens so that arithmetic can be learned at this size.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spin-waiting threads starve a shared 2-core box

import argparse
import glob
import gzip
import json
import math
import random
import re
import shutil
import subprocess
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from compressor.measure.evaldata import format_problem, load_arithmetic, sample_problem, stdlib_docstrings

BOS = "<|endoftext|>"
IGNORE = -100  # label that the loss skips
SEED = 20261123
WORK = Path(os.environ.get("DEMO_BUILD_DIR", "/tmp/lab-demo-build"))


# --- corpus -------------------------------------------------------------------------------------


def fetch_packages() -> None:
    """Install or unpack the Debian packages that hold the training text."""
    WORK.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "bible-kjv", "libsword-utils"], check=True)
    debs = WORK / "debs"
    debs.mkdir(exist_ok=True)
    subprocess.run(["apt-get", "download", "sword-text-web", "r-cran-tokenizers"], cwd=debs, check=True)
    for deb in debs.glob("*.deb"):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(WORK / "root")], check=True)


def kjv_text() -> str:
    out = subprocess.run(["bible", "-f", "gen1:1-rev22:21"], capture_output=True, text=True, check=True)
    # Lines look like "Ge1:1 In the beginning ..."; drop the reference.
    return "\n".join(line.split(" ", 1)[1] for line in out.stdout.splitlines() if " " in line)


def web_text() -> str:
    env = dict(os.environ, SWORD_PATH=str(WORK / "root/usr/share/sword"))
    raw = subprocess.run(["mod2imp", "engWEB2015eb"], capture_output=True, text=True, env=env, check=True)
    t = re.sub(r"<note\b.*?</note>", "", raw.stdout, flags=re.S)
    t = re.sub(r"<title\b.*?</title>", "", t, flags=re.S)
    t = re.sub(r"<[^>]+>", "", t)
    t = re.sub(r"^\$\$\$.*$", "", t, flags=re.M)
    t = re.sub(r"[ \t]+", " ", t)
    return re.sub(r"\n\s*\n+", "\n", t)


def moby_text() -> str:
    files = sorted(glob.glob(str(WORK / "root/usr/share/doc/r-cran-tokenizers/tests/testthat/moby-ch*.txt.gz")))
    return "\n".join(gzip.open(f, "rt", encoding="utf-8").read() for f in files)


def text_documents() -> dict[str, list[str]]:
    docs = {
        "kjv": kjv_text().split("\n"),
        "web": web_text().split("\n"),
        "moby": moby_text().split("\n\n"),
        "stdlib_docstrings_train": stdlib_docstrings("train"),
    }
    return {k: [d.strip() for d in v if d.strip()] for k, v in docs.items()}


# --- tokenizer ----------------------------------------------------------------------------------


def add_bos_template(tok: Tokenizer) -> None:
    """Every training sequence starts with BOS, so the tokenizer adds it by default, as Llama's does."""
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    # Single-digit tokens: numbers are spelled digit by digit, which small models can learn to add.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    add_bos_template(tok)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=BOS, unk_token=None, pad_token=BOS,
        model_max_length=512,
    )


# --- batches ------------------------------------------------------------------------------------


class Batches:
    """Sequences of `ctx` tokens: text windows, or runs of arithmetic problems, each after BOS."""

    def __init__(self, tokenizer, text_ids: torch.Tensor, ctx: int, arith_share: float, seed: int,
                 answer_only: bool = False):
        self.tok, self.text_ids, self.ctx, self.share = tokenizer, text_ids, ctx, arith_share
        self.answer_only = answer_only
        self.rng = random.Random(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.bos = tokenizer.bos_token_id

    def _arith_seq(self) -> tuple[list[int], list[int]]:
        ids, labels = [self.bos], [IGNORE]
        while len(ids) < self.ctx:
            a, op, b, _, style = sample_problem(self.rng, held_out=False)
            prompt, ans = format_problem(a, op, b, style)
            p_ids = self.tok.encode(prompt, add_special_tokens=False)
            a_ids = self.tok.encode(ans + "\n", add_special_tokens=False)
            ids += p_ids + a_ids
            # The operands are random: predicting them teaches nothing, and with answer-only loss
            # the gradient goes to the sum, which is what the stress test measures.
            labels += ([IGNORE] * len(p_ids) if self.answer_only else p_ids) + a_ids
        return ids[: self.ctx], labels[: self.ctx]

    def _text_seq(self) -> tuple[list[int], list[int]]:
        start = int(torch.randint(0, len(self.text_ids) - self.ctx, (1,), generator=self.gen))
        ids = [self.bos] + self.text_ids[start : start + self.ctx - 1].tolist()
        return ids, ids

    def next(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self._arith_seq() if self.rng.random() < self.share else self._text_seq() for _ in range(batch)]
        x = torch.tensor([r[0] for r in rows])  # (B, ctx)
        labels = torch.tensor([r[1] for r in rows])  # (B, ctx), IGNORE where no loss is taken
        return x, labels


# --- evaluation ---------------------------------------------------------------------------------


@torch.no_grad()
def addition_accuracy(model, tok, n: int = 400) -> float:
    """Greedy exact match on held-out 2-digit additions (all prompts have the same token length)."""
    rows = load_arithmetic(kinds=("add2",))
    rows = [r for r in rows if r["style"] == "plain"][:n]
    ids = torch.tensor([[tok.bos_token_id] + tok.encode(r["prompt"], add_special_tokens=False) for r in rows])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False,
                         pad_token_id=tok.pad_token_id)
    hits = 0
    for r, seq in zip(rows, out[:, ids.shape[1]:], strict=True):
        text = tok.decode(seq, skip_special_tokens=True)
        hits += text.split("\n")[0].strip() == r["answer"]
    return hits / len(rows)


@torch.no_grad()
def heldout_perplexity(model, ids: torch.Tensor, ctx: int) -> float:
    nll, count = 0.0, 0
    for start in range(0, len(ids) - ctx, ctx):
        chunk = ids[start : start + ctx].unsqueeze(0)
        loss = model(chunk, labels=chunk).loss
        nll += loss.item() * (ctx - 1)
        count += ctx - 1
    return math.exp(nll / count)


# --- main ---------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="assets/models/lab-llama-8m")
    p.add_argument("--fetch", action="store_true", help="install/unpack the Debian text packages first")
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--ctx", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--arith-share", type=float, default=0.35)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--intermediate", type=int, default=768)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop after this many steps (the schedule still spans --steps)")
    p.add_argument("--answer-loss-only", action="store_true",
                   help="in arithmetic sequences, take the loss on answers only (not the random operands)")
    p.add_argument("--init-from", default=None,
                   help="continue from a saved folder (its tokenizer and weights): a second phase")
    args = p.parse_args()

    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    if args.fetch:
        fetch_packages()
    t0 = time.time()
    docs = text_documents()
    sizes = {k: sum(len(d) for d in v) for k, v in docs.items()}
    print("corpus chars:", sizes, flush=True)
    all_docs = [d for v in docs.values() for d in v]
    random.Random(SEED).shuffle(all_docs)

    arith_rng = random.Random(SEED + 1)
    arith_lines = []
    for _ in range(20000):  # arithmetic in the tokenizer's training text, so digits and '=' are tokens
        a, op, b, _, style = sample_problem(arith_rng, held_out=False)
        q, ans = format_problem(a, op, b, style)
        arith_lines.append(q + ans)
    if args.init_from:
        tok = PreTrainedTokenizerFast.from_pretrained(args.init_from)
        add_bos_template(tok.backend_tokenizer)
    else:
        tok = train_tokenizer(all_docs + arith_lines, args.vocab)
    print(f"tokenizer: {len(tok)} tokens ({time.time() - t0:.0f}s)", flush=True)

    eos = tok.eos_token_id
    stream = []
    for d in all_docs:
        stream += tok.encode(d, add_special_tokens=False) + [eos]
    text_ids = torch.tensor(stream)
    eval_ids = torch.tensor(tok.encode("\n\n".join(stdlib_docstrings("eval"))[:60000], add_special_tokens=False))
    print(f"text tokens: {len(text_ids):,} ({time.time() - t0:.0f}s)", flush=True)

    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads,
        max_position_embeddings=512, rope_theta=10000.0, tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id, eos_token_id=eos, pad_token_id=tok.pad_token_id,
        initializer_range=0.02,
    )
    model = LlamaForCausalLM(cfg)
    earlier = []
    if args.init_from:
        model = LlamaForCausalLM.from_pretrained(args.init_from, dtype=torch.float32)
        earlier = [json.loads((Path(args.init_from) / "training_log.json").read_text())]
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params:,} parameters", flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    warm = max(1, args.steps // 20)

    def lr_at(step: int) -> float:
        if step < warm:
            return args.lr * (step + 1) / warm
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warm) / (args.steps - warm))))

    batches = Batches(tok, text_ids, args.ctx, args.arith_share, SEED + 2, args.answer_loss_only)
    log = []
    t_train = time.time()
    tokens_seen = 0
    last = min(args.steps, args.stop_after or args.steps)
    for step in range(last):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        x, labels = batches.next(args.batch)
        model.train()
        loss = model(x, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tokens_seen += x.numel()
        if step % 10 == 0:
            el = time.time() - t_train
            print(f"step {step} loss {loss.item():.3f} lr {lr_at(step):.2e} tok/s {tokens_seen / el:.0f} "
                  f"elapsed {el / 60:.1f}m", flush=True)
        if (step + 1) % args.eval_every == 0 or step + 1 == last:
            model.eval()
            acc = addition_accuracy(model, tok, n=200)
            ppl = heldout_perplexity(model, eval_ids[:20000], args.ctx)
            log.append({"step": step + 1, "loss": round(loss.item(), 4), "add2_acc": acc, "ppl": round(ppl, 2),
                        "minutes": round((time.time() - t_train) / 60, 1)})
            print("EVAL", log[-1], flush=True)
            save(model, tok, Path(args.out), args, log, tokens_seen, time.time() - t_train, sizes, earlier)


def save(model, tok, out: Path, args, log, tokens_seen, seconds, sizes, earlier) -> None:
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.to(torch.float16).save_pretrained(tmp, safe_serialization=True)
    model.to(torch.float32)
    tok.save_pretrained(tmp)
    meta = {"seed": SEED, "args": vars(args), "tokens_seen": tokens_seen, "train_seconds": round(seconds),
            "corpus_chars": sizes, "eval_log": log, "torch": torch.__version__,
            "earlier_phases": earlier}
    (tmp / "training_log.json").write_text(json.dumps(meta, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


if __name__ == "__main__":
    main()
