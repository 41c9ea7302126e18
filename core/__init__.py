"""The shared core every stage builds on, each piece in one place: model and tokenizer I/O (`model_io`, `gguf`),
output folders, run records and caches (`records`), architecture arithmetic (`arch`), precision (`precision`),
measurements of a model (`measure`), paired statistics (`stats`), the standard library as data
(`stdlib_corpus`), OpenAI-compatible servers (`server`) and the error model (`errors`).

Imports flow one way: core <- compress <- deploy, and core <- bench, evals; the runner and the CLI
(`minitron.pipeline`, `minitron.cli`) sit on top. Nothing here imports a stage package.
"""
