"""Out-of-memory errors turned into the levers that help, with the values this run used."""
from __future__ import annotations


def is_out_of_memory(err: BaseException) -> bool:
    text = str(err)
    return (isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError"
            or "out of memory" in text.lower() or "can't allocate memory" in text)


def oom_message(args) -> str:
    """The levers, in the order that usually helps most."""
    levers = [f"--per_device_train_batch_size {max(1, args.per_device_train_batch_size // 2)} with "
              f"--gradient_accumulation_steps {args.gradient_accumulation_steps * 2}",
              f"--max_length {max(128, args.max_length // 2)}"]
    if not args.gradient_checkpointing:
        levers.append("--gradient_checkpointing true")
    if args.train_type in ("full", "freeze"):
        levers.append("--train_type lora")
    if not args.quant_bits:
        levers.append("--quant_bits 4 (QLoRA)")
    return "out of memory while training; try " + ", ".join(levers)
