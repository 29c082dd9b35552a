"""Weight attacks: corpora, the LoRA engine and named recipes. Importing this registers the recipes."""

from persist.finetune_attacks import recipes  # noqa: F401
