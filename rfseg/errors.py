"""The one exception type for user mistakes: the command line turns it into a one-line message and exit 2."""


class UserError(ValueError):
    """A problem the user can fix (bad file, bad config, bad argument). The message names the thing and the fix."""


def check_choice(what: str, value, choices) -> None:
    """Raise :class:`UserError` unless ``value`` is one of ``choices``; ``what`` names the setting as the user
    gives it (config key and/or flag)."""
    if value not in choices:
        raise UserError(f"{what} must be one of {', '.join(map(str, choices))}, got {value!r}")
