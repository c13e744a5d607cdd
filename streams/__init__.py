"""A streaming position sizer: sizes trading signals into orders under exposure caps."""

__version__ = "0.1.0"
