"""The exceptions condorml raises for mistakes a user can fix.

Library code raises these; the CLI prints ``str(error)`` as one line and exits with code 2.
Anything else escaping a command is a bug and exits with code 1 and a traceback.
"""

from __future__ import annotations


class CondormlError(Exception):
    """A user-facing error whose message names the file or option and says what to do."""


class DataError(CondormlError):
    """Training or test images are missing, unreadable or unlabelled."""


class CheckpointError(CondormlError):
    """No usable checkpoint, or one that does not belong to this command line."""


class ConfigMismatchError(CheckpointError):
    """The checkpoint was written by a run with another configuration."""
