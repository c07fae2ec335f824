"""devtunnel: public URLs for local services, with a terminal inspector."""

__version__ = "0.1.0"
