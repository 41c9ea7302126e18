"""One error model. `UserError` is what the person running the command can fix, and its message says how: the
CLI prints it as one line and exits 2. Anything else is a bug and keeps its traceback. `RunFailed` is a run that
worked but whose answer is "no" (a diverged training, a verification that found a flipped verdict): exit 1.

    raise BadInput("--seq-len 9000 is out of range: the model has 8192 positions")

The kinds subclass the built-in exception a Python caller would expect (`BadInput` is a ValueError,
`MissingInput` a FileNotFoundError, ...), so library code can be called and caught without knowing this module.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input, a missing dependency or an engine that failed: the message names the problem and the fix."""


class BadInput(UserError, ValueError):
    """An argument, a file's content or a recipe setting that cannot be used as given."""


class MissingInput(UserError, FileNotFoundError):
    """A file, folder or model that is not where it was said to be."""


class OutputExists(UserError, FileExistsError):
    """An output that is already there and would be replaced without --overwrite."""


class MissingDependency(UserError, ImportError):
    """An optional package, an engine or a server that is not available here."""


class EngineUnavailable(MissingDependency):
    """An engine (TensorRT-LLM, vLLM) that is not installed here, or a server that does not answer."""


class EngineFailed(UserError, RuntimeError):
    """An external engine (TensorRT-LLM, vLLM, a server) that started and then failed; the message carries the
    end of its log."""


class RunFailed(Exception):
    """A run that completed with a negative answer: exit status 1, one line, no traceback."""
