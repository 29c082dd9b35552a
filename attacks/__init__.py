"""Prompt attacks. Importing this package registers every attack family."""

from persist.attacks import (  # noqa: F401
    bon,
    controls,
    encodings,
    garak_source,
    manyshot,
    multiturn,
    pair,
    personas,
    steering,
    suffix,
    suffix_item,
    templates,
)
