"""postloan: post-loan risk control for auto finance."""

__version__ = "0.1.0"
