"""Moved to mailwarden/engine/ (one engine for the milter and `mailwarden check`)."""

from mailwarden.engine.core import Envelope, Evaluation, evaluate

__all__ = ["Envelope", "Evaluation", "evaluate"]
