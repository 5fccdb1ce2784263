"""vLLM as the engine of `infer` and `serve` (--infer_backend vllm).

What swiftlike keeps in front of vLLM — tenants, the marketplace's resolution and seals, templates and tokenising,
stop strings, the OpenAI API, metrics and errors — stays swiftlike's; vLLM gets token ids, sampling parameters and a
LoRARequest per request. This module is the mapping between the two:

- `require_vllm`: the one-line refusal where vLLM cannot run (not installed, not Linux, no CUDA GPU), before any
  model loads;
- `LoraIds`: the lora_int_id of each (adapter name, version);
- `lora_request_kwargs`, `sampling_kwargs`, `engine_kwargs`: plain dicts (tested without vLLM), and
  `lora_request`, `sampling_params`, `tokens_prompt`: vLLM's real objects built from them;
- `vllm_adapter_problem`: what vLLM cannot serve, refused in one line before vLLM sees the adapter;
- `VllmModel` and `load_checkpoint_vllm`: `infer`'s offline generation on vLLM's LLM.

vLLM is imported only inside the functions that build its objects. Written against vLLM 0.34 (vllm.LLM,
vllm.v1.engine.async_llm.AsyncLLM: generate / add_lora / remove_lora / abort).
"""
from __future__ import annotations

import importlib.util
import itertools
import json
import sys
import threading
from pathlib import Path
from typing import Iterable, Optional

from ..registry import SwiftlikeError
from .arguments import VLLM_LORA_RANKS

FLAG = "--infer_backend vllm"
PT_INSTEAD = "or use --infer_backend pt (swiftlike's own engine)"
# what vLLM's PEFTHelper accepts as init_lora_weights besides booleans (inits that leave the base weights alone)
VLLM_INITS = ("gaussian", "eva", "orthogonal", "mica", "lora_ga")
# vLLM's CompletionOutput.finish_reason -> the finish reasons swiftlike's engine reports to its requests
FINISH = {"stop": "stop", "length": "length", "abort": "cancelled", "error": "error", "repetition": "stop"}


def require_vllm(flag: str = FLAG) -> str:
    """vLLM's version, or a one-line SwiftlikeError saying why it cannot run here (checked before a model loads)."""
    if not sys.platform.startswith("linux"):
        raise SwiftlikeError(f"{flag}: vLLM runs on Linux with a CUDA GPU, not on {sys.platform}; {PT_INSTEAD}")
    if importlib.util.find_spec("vllm") is None:
        raise SwiftlikeError(f"{flag}: vLLM is not installed; `pip install vllm` (Linux, a CUDA GPU), {PT_INSTEAD}")
    import torch

    if not torch.cuda.is_available():
        raise SwiftlikeError(f"{flag}: vLLM needs a CUDA GPU and torch {torch.__version__} sees none; {PT_INSTEAD}")
    try:
        import vllm
    except Exception as err:  # e.g. built for another torch than the one installed
        first = (str(err).strip().splitlines() or [""])[0]
        raise SwiftlikeError(f"{flag}: vLLM is installed but does not import ({type(err).__name__}: {first}); "
                             f"reinstall it with the torch it pins (`pip install vllm`), {PT_INSTEAD}") from None
    return str(getattr(vllm, "__version__", "?"))


# -- adapters -------------------------------------------------------------------------------------------------------
class LoraIds:
    """vLLM's lora_int_id of each adapter version: the same id for (name, version) as long as the server runs (an
    adapter evicted and loaded again is the same adapter to vLLM), a new id for a new version (vLLM's LoRARequest: a
    name loaded again gets a new id while requests for the old one may still run), never reused for anything else,
    and never below 1 (vLLM refuses it). Any thread."""

    def __init__(self):
        self._ids: dict[tuple[str, int], int] = {}
        self._next = itertools.count(1)
        self._lock = threading.Lock()

    def get(self, name: str, version: int) -> int:
        with self._lock:
            key = (name, int(version))
            if key not in self._ids:
                self._ids[key] = next(self._next)
            return self._ids[key]

    def __len__(self) -> int:
        return len(self._ids)


def lora_request_kwargs(name: str, lora_int_id: int, path) -> dict:
    """vLLM's LoRARequest fields for an adapter directory (the store copy swiftlike checked)."""
    if lora_int_id < 1:
        raise ValueError(f"lora_int_id must be at least 1, got {lora_int_id}")
    return {"lora_name": name, "lora_int_id": int(lora_int_id), "lora_path": str(Path(path).resolve())}


def lora_request(kwargs: dict):
    from vllm.lora.request import LoRARequest

    return LoRARequest(**kwargs)


def adapter_rank(cfg: dict) -> int:
    """The largest rank in an adapter_config.json (r and rank_pattern)."""
    return max([int(cfg.get("r") or 8), *[int(v) for v in (cfg.get("rank_pattern") or {}).values()]])


def served_rank(ranks: Iterable[int]) -> int:
    """--max_lora_rank by default: vLLM's smallest allowed rank that holds every given rank, at least 16 (vLLM's
    own default)."""
    need = max([16, *ranks])
    for rank in VLLM_LORA_RANKS:
        if rank >= need:
            return rank
    raise SwiftlikeError(f"LoRA rank {need}: more than vLLM serves (at most {VLLM_LORA_RANKS[-1]})")


def vllm_adapter_problem(cfg: dict, max_lora_rank: int) -> Optional[str]:
    """Why vLLM cannot serve an adapter with this adapter_config.json (None: it can). swiftlike's own refusals
    (non-LoRA tuners, DoRA, saved modules, biases: `lora.lora_config`) come first; these are vLLM's on top."""
    rank = adapter_rank(cfg)
    if rank > max_lora_rank:
        bigger = next((r for r in VLLM_LORA_RANKS if r >= rank), None)
        fix = f"start with --max_lora_rank {bigger}" if bigger else f"vLLM serves ranks up to {VLLM_LORA_RANKS[-1]}"
        return f"LoRA rank {rank} is more than --max_lora_rank {max_lora_rank}; {fix}"
    init = cfg.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower() not in VLLM_INITS:
        return (f"init_lora_weights {init!r} changes the base weights when PEFT loads the adapter, which vLLM does "
                f"not do; merge it (`swiftlike merge-lora`) and serve the merged model")
    if cfg.get("lora_bias"):
        return "a LoRA with lora_bias, which vLLM does not serve; merge it and serve the merged model"
    for key, what in (("alora_invocation_tokens", "Activated LoRA"), ("layer_replication", "layer_replication")):
        if cfg.get(key):
            return f"{what}, which vLLM does not serve"
    return None


def check_adapter_vllm(path: Path, *, max_lora_rank: int, max_loras: int = 1,
                       max_position_embeddings: Optional[int] = None) -> dict:
    """adapter_config.json of an adapter vLLM will load, refusing in one line what vLLM cannot serve: swiftlike's
    checks, then vLLM's own (its PEFTHelper, where vLLM imports)."""
    from .lora import lora_config

    cfg = lora_config(path)
    problem = vllm_adapter_problem(cfg, max_lora_rank)
    if problem is None:
        try:
            from vllm.config.lora import LoRAConfig
            from vllm.lora.peft_helper import PEFTHelper
        except ImportError:
            pass
        else:
            try:
                helper = PEFTHelper.from_local_dir(str(path), max_position_embeddings)
                helper.validate_legal(LoRAConfig(max_lora_rank=max_lora_rank, max_loras=max_loras))
            except Exception as err:  # noqa: BLE001 - whatever vLLM's check raises is a refusal, in one line
                problem = f"vLLM refuses it: {' '.join(str(err).split()) or type(err).__name__}"
    if problem:
        raise SwiftlikeError(f"{path}: {problem} ({FLAG})")
    return cfg


# -- requests -------------------------------------------------------------------------------------------------------
def sampling_kwargs(*, max_tokens: int, temperature: float = 1.0, top_p: float = 1.0, seed: Optional[int] = None,
                    stop: Iterable[str] = (), stop_token_ids: Iterable[int] = (), n: int = 1,
                    presence_penalty: float = 0.0, frequency_penalty: float = 0.0, repetition_penalty: float = 1.0,
                    stream: bool = True) -> dict:
    """vLLM's SamplingParams fields for one request, with swiftlike's semantics:

    - stops: exactly `stop_token_ids` (the template's stop ids, or none with the API's ignore_eos) — so
      ignore_eos=True, else vLLM would also stop at the model's EOS; `stop` strings stop vLLM early, and swiftlike's
      TextStream still cuts the text (so vLLM's own text is not needed: detokenize only when there are stop strings);
    - greedy at temperature 0 (top_p then 1, as vLLM demands);
    - seed: a torch generator seed; a negative one is taken modulo 2**64, as torch does (vLLM reads -1 as none);
    - output_kind: DELTA (each output carries the new tokens only) when streaming, else FINAL_ONLY.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    stop = [s for s in dict.fromkeys(stop) if s]
    greedy = not temperature or temperature <= 0
    return {
        "n": int(n), "max_tokens": int(max_tokens), "temperature": 0.0 if greedy else float(temperature),
        "top_p": 1.0 if greedy else float(top_p), "seed": None if seed is None else int(seed) % 2 ** 64,
        "stop": stop, "stop_token_ids": sorted(int(t) for t in stop_token_ids), "ignore_eos": True,
        "include_stop_str_in_output": True, "detokenize": bool(stop), "skip_special_tokens": True,
        "presence_penalty": float(presence_penalty), "frequency_penalty": float(frequency_penalty),
        "repetition_penalty": float(repetition_penalty), "output_kind": "DELTA" if stream else "FINAL_ONLY",
    }


def request_sampling_kwargs(req) -> dict:
    """sampling_kwargs of a swiftlike engine Request (what `serve` queues for each API call)."""
    return sampling_kwargs(max_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p, seed=req.seed,
                           stop=getattr(req, "stop", ()), stop_token_ids=req.stop_ids,
                           presence_penalty=req.presence_penalty, frequency_penalty=req.frequency_penalty,
                           repetition_penalty=req.repetition_penalty)


def sampling_params(kwargs: dict):
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    kw = dict(kwargs)
    kw["output_kind"] = RequestOutputKind[kw["output_kind"]]
    return SamplingParams(**kw)


def tokens_prompt(ids: list) -> dict:
    """A prompt already tokenised by swiftlike (its template, its tokenizer): vLLM's TokensPrompt."""
    return {"prompt_token_ids": [int(t) for t in ids]}


def finish_reason(reason) -> Optional[str]:
    """vLLM's finish reason as swiftlike's engine reports it (None: not finished)."""
    if reason is None:
        return None
    return FINISH.get(str(reason), "error")


# -- the engine -----------------------------------------------------------------------------------------------------
DTYPES = {"auto": "auto", "float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


def engine_kwargs(model_dir, *, served_model_name: Optional[str] = None, torch_dtype: str = "auto",
                  trust_remote_code: bool = False, enable_lora: bool = True, max_loras: int = 1,
                  max_lora_rank: int = 16, max_num_seqs: Optional[int] = None, max_model_len: Optional[int] = None,
                  gpu_memory_utilization: Optional[float] = None) -> dict:
    """vLLM's EngineArgs (AsyncEngineArgs for serve, LLM(**kwargs) for infer). swiftlike tokenises and applies the
    template itself; vLLM loads the same directory's weights and tokenizer (for stop strings)."""
    dtype = DTYPES.get((torch_dtype or "auto").lower())
    if dtype is None:
        raise SwiftlikeError(f"--torch_dtype {torch_dtype!r}: use {', '.join(DTYPES)}")
    if max_lora_rank not in VLLM_LORA_RANKS:
        raise SwiftlikeError(f"--max_lora_rank {max_lora_rank}: vLLM takes one of "
                             f"{', '.join(map(str, VLLM_LORA_RANKS))}")
    kw = {"model": str(model_dir), "tokenizer": str(model_dir), "dtype": dtype, "trust_remote_code": trust_remote_code,
          "enable_lora": bool(enable_lora), "disable_log_stats": True}
    if served_model_name:
        kw["served_model_name"] = served_model_name
    if enable_lora:
        # max_loras adapters in one batch (swiftlike's --max_resident: every resident adapter may be in use at
        # once); twice that cached, so that a version retiring while its last requests finish does not push out
        # one that is still resident (vLLM would read it from disk again)
        kw.update(max_loras=int(max_loras), max_lora_rank=int(max_lora_rank), max_cpu_loras=2 * int(max_loras))
    if max_num_seqs:
        kw["max_num_seqs"] = int(max_num_seqs)
    if max_model_len:
        kw["max_model_len"] = int(max_model_len)
    if gpu_memory_utilization:
        kw["gpu_memory_utilization"] = float(gpu_memory_utilization)
    return kw


def context_length(model_dir, trust_remote_code: bool = False, max_model_len: Optional[int] = None) -> int:
    """The context swiftlike checks prompts against: --max_model_len, else the model's (as vLLM derives it)."""
    if max_model_len:
        return int(max_model_len)
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    text = cfg.get("text_config") or cfg
    return int(text.get("max_position_embeddings") or cfg.get("max_position_embeddings") or 4096)


# -- infer ----------------------------------------------------------------------------------------------------------
def offline_llm(kwargs: dict):
    """vLLM's offline engine (loads the model on the GPU)."""
    from vllm import LLM

    return LLM(**kwargs)


class VllmModel:
    """`infer --infer_backend vllm`'s model: vLLM's offline LLM on the base, the checkpoint's adapter (if any) as a
    LoRARequest on every prompt. swiftlike renders and tokenises; answers are decoded and cut at the template's
    stop words as `infer.generate` does."""
    is_vllm = True

    def __init__(self, base_dir: Path, tokenizer, *, adapter_dir: Optional[Path] = None, adapter_name: str = "adapter",
                 options=None, llm_factory=None):
        self.tokenizer = tokenizer
        self.lora_kwargs = None
        rank = 16
        if adapter_dir is not None:
            cfg = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
            rank = getattr(options, "max_lora_rank", None) or served_rank([adapter_rank(cfg)])
            check_adapter_vllm(Path(adapter_dir), max_lora_rank=rank)
            self.lora_kwargs = lora_request_kwargs(adapter_name, 1, adapter_dir)
        self.engine_kwargs = engine_kwargs(
            base_dir, torch_dtype=getattr(options, "torch_dtype", "auto"),
            trust_remote_code=getattr(options, "trust_remote_code", False), enable_lora=adapter_dir is not None,
            max_loras=1, max_lora_rank=rank, max_model_len=getattr(options, "max_model_len", None),
            gpu_memory_utilization=getattr(options, "gpu_memory_utilization", None))
        self.llm = (llm_factory or offline_llm)(self.engine_kwargs)

    def generate_many(self, template, conversations: list, *, max_new_tokens=512, temperature=0.0, top_p=1.0,
                      repetition_penalty=1.0, seed=None, stream=False) -> list[str]:
        """One answer per conversation, all in one vLLM batch."""
        prompts = [tokens_prompt(self.tokenizer(template.render(m, add_generation_prompt=True),
                                                add_special_tokens=False).input_ids) for m in conversations]
        stop_ids = template.stop_token_ids or [self.tokenizer.eos_token_id]
        params = sampling_params(sampling_kwargs(max_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                                 seed=seed, stop=template.stop_words, stop_token_ids=stop_ids,
                                                 repetition_penalty=repetition_penalty, stream=False))
        lora = lora_request(self.lora_kwargs) if self.lora_kwargs else None
        outs = self.llm.generate(prompts, params, lora_request=lora, use_tqdm=False)
        answers = []
        for out in outs:
            text = self.tokenizer.decode(list(out.outputs[0].token_ids), skip_special_tokens=True)
            for stop in template.stop_words:
                if stop and stop in text:
                    text = text[: text.index(stop)]
            answers.append(text)
        return answers

    def generate(self, template, messages: list, *, stream=False, **gen):
        """One answer (vLLM's offline LLM does not stream: a stream is the whole answer as one piece)."""
        answer = self.generate_many(template, [messages], **gen)[0]
        return iter([answer]) if stream else answer


def load_checkpoint_vllm(ckpt_dir=None, *, force: bool = False, options=None, llm_factory=None):
    """`infer.load_checkpoint` on vLLM: the same resolution of checkpoint and base (an adapter's base checked as
    `infer` checks it), the tokenizer and template swiftlike uses, and the weights loaded by vLLM, not torch.
    `llm_factory(engine_kwargs)`: vLLM's LLM by default (tests pass a stand-in for the GPU part)."""
    from ..checkpoint import check_base, checkpoint_template, is_adapter_dir, read_manifest
    from ..models.load import load_tokenizer
    from ..templates import get_template
    from . import Loaded, resolve_checkpoint

    ckpt, resolved, model_type = resolve_checkpoint(ckpt_dir, force=force, opts=options)
    adapter = ckpt if ckpt is not None and is_adapter_dir(ckpt) else None
    if adapter is not None:  # what `infer` refuses when it loads the adapter with PEFT
        check_base(read_manifest(adapter), base_dir=resolved.path, base_model_type=model_type, force=force,
                   where=f"{adapter}: adapter")
    tokenizer = load_tokenizer(resolved.path, options.trust_remote_code)
    model = VllmModel(Path(resolved.path), tokenizer, adapter_dir=adapter,
                      adapter_name=adapter.name if adapter is not None else "adapter", options=options,
                      llm_factory=llm_factory)
    spec, system = checkpoint_template(ckpt, template=options.template, system=options.system,
                                       default=resolved.spec.template)
    return Loaded(model, tokenizer, get_template(spec, tokenizer, system=system), ckpt, resolved.path, model_type)
