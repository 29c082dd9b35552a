"""persist: measure how well a language model's alignment persists under attack.

The core package. It never imports the plugin packages (attacks, probes, finetune_attacks) at module level;
they register themselves into persist's registries when imported.
"""

__version__ = "0.1.0"
