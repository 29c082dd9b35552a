"""The jobs: one module per command, each a frozen config dataclass and a `run_*` function.

  options     RunOptions: what every job shares (suite, scorer, items, load options, run folder, progress)
  score       `persist score`: one model, clean
  attack      `persist attack`: the prompt-attack campaign (and the optimised / white-box attacks)
  finetune    `persist finetune-attack`: the dose ladder of a fine-tune recipe
  sweep       `persist finetune-attack --search` and `study --worst-case`: learning rate x rank x steps
  study       `persist study`: the whole persistence protocol for a model and a baseline
  plan        `persist plan`: the design a pilot run's spread asks for

Jobs sit above the run machinery and the report code; nothing below imports them.
"""
