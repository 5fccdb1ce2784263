"""The quick-start command, shown by `swiftlike --help` and `swiftlike sft --help` exactly as in the README."""

QUICK_START = ("swiftlike sft --model_type smollm2-135m-instruct --dataset 'self-cognition#200' --model_name Nova "
               "--model_author 'Orbit Labs' --learning_rate 5e-4")
