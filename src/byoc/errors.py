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
