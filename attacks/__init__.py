"""Prompt attacks. Importing this package registers every attack family."""

from persist.attacks import controls, encodings, garak_source, manyshot, multiturn, personas, templates  # noqa: F401
