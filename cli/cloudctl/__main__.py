"""``python -m cloudctl``."""

from cloudctl.main import entry

entry()
