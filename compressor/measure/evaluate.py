"""The measurement API in one import: quality measured on the same tokens for a baseline and a
compressed model. Each concept lives in its own module; this one names them together.

- settings.py: `EvalSettings`, how much to evaluate, every default resolved once.
- quality.py: sliding-window perplexity, the baseline's top-k `Reference`, KL (a lower bound, top-k
  plus a tail bucket) and top-1 agreement.
- generation.py: greedy generation, the positions a model was trained for, `check_positions`.
- arithmetic.py: exact match with a strict answer parser, Wilson and Newcombe paired intervals.
- online.py: WikiText-2, GSM8K, lm-eval-harness when their libraries and the hub are there.
- speed.py (imported on its own: it needs the engine's KV caches): prefill/decode speed, peak memory.
"""

from compressor.measure.arithmetic import (  # noqa: F401
    arithmetic_max_new_tokens,
    evaluate_arithmetic,
    paired_diff_ci,
    parse_answer,
    wilson_ci,
)
from compressor.measure.generation import check_positions, greedy_generate, leading_bos, max_positions  # noqa: F401
from compressor.measure.online import online_extras  # noqa: F401
from compressor.measure.quality import (  # noqa: F401
    QualityResult,
    Reference,
    eval_tokens,
    evaluate_quality,
    kl_topk,
    perplexity_from_logprobs,
    sliding_windows,
    topk_summary,
    window_logprobs,
)
from compressor.measure.settings import EvalSettings  # noqa: F401
