"""ansm: Active Adversarial Noise Suppression for image forgery localization."""

__version__ = "0.1.0"
