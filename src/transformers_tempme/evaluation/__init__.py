"""Evaluation: text-video retrieval metrics and the loop that encodes a split once."""
