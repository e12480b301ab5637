"""Inference: improvises the notes of the channels it owns, with LiteRT step models."""
