"""Minitron: prune and distill a model family from one Hugging Face checkpoint, then deploy, benchmark and
evaluate it. One distribution, one import name: the stages are `minitron.compress`, `minitron.deploy`,
`minitron.bench` and `minitron.evals` (top-level folders of the repository, mapped into this package by
pyproject.toml); the recipe runner, the findings report and the `minitron` command live here.

    minitron run recipes/smollm2.yaml          # the command (minitron/cli.py)
    python -m minitron run recipes/smollm2.yaml

Importing this package does no work: each module is imported when used.
"""
