"""The one exception type for user mistakes: the command line turns it into a one-line message and exit 2."""


class UserError(ValueError):
    """A problem the user can fix (bad file, bad config, bad argument). The message names the thing and the fix."""
