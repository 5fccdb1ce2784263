"""Datasets for fine-tuning: load, check, mix, encode, pack and collate.

    from swiftlike.data import load_dataset, encode_dataset, pack, PaddingFreeCollator
    splits = load_dataset(["alpaca-zh#500", "./mine.jsonl", "self-cognition#100"], split_dataset_ratio=0.01,
                          model_name=("小黄", "Xiao Huang"), model_author=("魔搭", "ModelScope"))
    encoded, dropped = encode_dataset(splits.train, template, num_proc=4)
    prompts = load_prompts("eval.jsonl")                   # inference: rows may end with the user turn
    specs = read_dataset_info("LLaMA-Factory/data")        # LLaMA-Factory / ms-swift dataset_info names

Dataset argument syntax: see swiftlike.data.sources. Row formats: see swiftlike.data.formats.
Nothing here imports torch until a collator is called.
"""
from .dataset_info import read_dataset_info
from .errors import DatasetError, Problem
from .loading import DatasetSplits, convert_records, load_dataset, read_dataset, sample_rows, split_rows
from .prompts import load_prompts
from .sources import DatasetRef, parse_dataset

_LAZY = {
    "encode_dataset": "swiftlike.data.encode",
    "cache_key": "swiftlike.data.encode",
    "pack": "swiftlike.data.packing",
    "PaddingFreeCollator": "swiftlike.data.collate",
    "PaddingCollator": "swiftlike.data.collate",
    "IGNORE_INDEX": "swiftlike.data.collate",
}

__all__ = ["DatasetError", "Problem", "DatasetSplits", "load_dataset", "read_dataset", "convert_records",
           "sample_rows", "split_rows", "DatasetRef", "parse_dataset", "load_prompts", "read_dataset_info", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'swiftlike.data' has no attribute {name!r}")
