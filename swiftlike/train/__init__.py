"""Training: arguments, tuners, the sft loop on the HF Trainer, run outputs."""
