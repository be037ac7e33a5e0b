"""vidact: joint video-action generative models for robots."""

__version__ = "0.1.0"
