"""Text scores of a prediction against its reference, as LLaMA-Factory computes them (src/llamafactory/train/sft/
metric.py): the text is segmented with jieba (Chinese into words, English into its words), ROUGE-1/2/L F1 from
`rouge-chinese` over the segmented words, BLEU-4 from nltk's `sentence_bleu` with smoothing method 3 — over the same
words (LLaMA-Factory takes characters for BLEU; words are what English BLEU means) — and exact match of the stripped
texts. Every score is a percentage, averaged over rows."""
from __future__ import annotations

from ..registry import SwiftlikeError

TEXT_METRICS = ("bleu-4", "rouge-1", "rouge-2", "rouge-l", "exact_match")


_LIBS = None


def _libraries():
    global _LIBS
    if _LIBS is not None:
        return _LIBS
    try:
        import logging

        import jieba
        from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
        from rouge_chinese import Rouge
    except ImportError as err:
        raise SwiftlikeError(f"swiftlike eval needs {err.name}: pip install 'swiftlike[eval]' "
                             f"(jieba, nltk, rouge-chinese)") from None
    jieba.setLogLevel(logging.CRITICAL)
    _LIBS = jieba, sentence_bleu, SmoothingFunction().method3, Rouge()
    return _LIBS


def check_installed() -> None:
    """Fail with one line before the model loads when the scoring libraries are missing (without importing nltk,
    which takes seconds: it is needed only once the answers are there)."""
    import importlib.util

    for module in ("jieba", "nltk", "rouge_chinese"):
        if importlib.util.find_spec(module) is None:
            raise SwiftlikeError(f"swiftlike eval needs {module}: pip install 'swiftlike[eval]' "
                                 f"(jieba, nltk, rouge-chinese)")


def words(text: str, jieba=None) -> list[str]:
    """jieba's segmentation without the whitespace tokens: Chinese words, English words and punctuation."""
    if jieba is None:
        jieba = _libraries()[0]
    return [w for w in jieba.cut(text) if w.strip()]


def score(prediction: str, reference: str) -> dict:
    """{metric: percentage} for one row."""
    jieba, bleu, smoothing, rouge = _libraries()
    hyp, ref = words(prediction, jieba), words(reference, jieba)
    out = {"bleu-4": 0.0, "rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
    if hyp and ref:
        out["bleu-4"] = bleu([ref], hyp, smoothing_function=smoothing) * 100
        for key, value in rouge.get_scores(" ".join(hyp), " ".join(ref))[0].items():
            out[key] = value["f"] * 100
    out["exact_match"] = 100.0 if prediction.strip() == reference.strip() else 0.0
    return out


def average(rows: list[dict]) -> dict:
    """The mean of each metric over rows, rounded to 4 places as LLaMA-Factory reports them."""
    if not rows:
        return {k: None for k in TEXT_METRICS}
    return {k: round(sum(r[k] for r in rows) / len(rows), 4) for k in TEXT_METRICS}
