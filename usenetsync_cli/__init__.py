"""usenetsync: back up and share folders of any size through Usenet."""

__version__ = "0.1.0"
