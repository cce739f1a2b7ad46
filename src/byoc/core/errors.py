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
