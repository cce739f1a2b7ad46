"""Errors a user can fix. Their message is what the user sees: lead with what
happened, then what to do."""


class ByocError(Exception):
    """A problem with the job's inputs or settings, not a bug in byoc."""


class ConfigError(ByocError):
    """Bad hyperparameter, command-line option or config file."""


class DataError(ByocError):
    """A missing, empty or inconsistent data channel."""


class ArtifactError(ByocError):
    """A model artifact that is missing, corrupt or incompatible."""


class ImageError(ByocError):
    """An image that cannot be decoded (unknown format, truncated, corrupt)."""


class ImageTooLarge(ImageError):
    """An image whose header declares more pixels than allowed (a decompression bomb)."""


def first_line(exc: BaseException) -> str:
    """`TypeName: the first non-blank line of the message`: one line for a log or a failure file,
    whatever the exception carries (torch's errors span many lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


# pyproject.toml's extras by the top-level module a command imports from them: the core install (the AWS
# commands) has none of these, and a command that needs one names the extra to install.
EXTRA_OF_MODULE = {
    "docker": "local",
    "torch": "torch",
    "torchvision": "torch",
    "PIL": "torch",
    "numpy": "torch",
    "sagemaker_training": "train",
    "sklearn": "train",
    "matplotlib": "train",
    "tensorboard": "train",
    "sagemaker_inference": "serve",
    "mms": "serve",
    "psutil": "serve",
    "onnx": "onnx",
    "onnxruntime": "onnx",
}


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """`needs MODULE, from the [EXTRA] extra: pip install 'byoc[EXTRA]'` when the module missing is one
    of an extra's; None for any other module (a broken install, not a choice of extras)."""
    module = (exc.name or "").partition(".")[0]
    extra = EXTRA_OF_MODULE.get(module)
    if extra is None:
        return None
    return f"needs {module}, from the [{extra}] extra: pip install 'byoc[{extra}]'"
