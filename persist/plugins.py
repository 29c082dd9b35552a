"""Loading the plugins: the one place that brings attacks, probes and recipes into persist's registries.

The core never imports a plugin package. Plugins are Python packages named under the entry-point group
`persist.plugins` (this distribution names persist.attacks, persist.probes and persist.finetune_attacks; another
distribution can add its own); importing one registers its suites, scorers, attacks and recipes. The CLI calls
`load()` once at start; library users call it too (or import the plugin modules they want).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

GROUP = "persist.plugins"


def load() -> list[str]:
    """Import every module registered under the `persist.plugins` entry-point group; returns their names.

    Idempotent: a second call imports nothing new. A plugin that fails to import raises (a broken install is a
    bug to see, not a warning to skip)."""
    names = sorted({ep.value for ep in entry_points(group=GROUP)})
    for name in names:
        importlib.import_module(name)
    return names
