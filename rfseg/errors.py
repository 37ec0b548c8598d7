"""The one exception type for user mistakes: the command line turns it into a one-line message and exit 2."""


class UserError(ValueError):
    """A problem the user can fix (bad file, bad config, bad argument). The message names the thing and the fix.

    ``UserError(problem, fix=...)`` keeps the two apart (``problem``, ``fix``), so that a caller whose user reaches
    the problem by another road (predict reaches a model's preprocessing, not ``rfseg preprocess``) can keep the
    problem and give its own fix; the message is then ``problem: fix``."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem, self.fix = problem, fix
        super().__init__(problem if fix is None else f"{problem}: {fix}")


def check_choice(what: str, value, choices) -> None:
    """Raise :class:`UserError` unless ``value`` is one of ``choices``; ``what`` names the setting as the user
    gives it (config key and/or flag)."""
    if value not in choices:
        raise UserError(f"{what} must be one of {', '.join(map(str, choices))}, got {value!r}")
