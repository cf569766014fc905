"""Trained models shipped with clem-bridge (one folder each: weights + model card); see README.md here."""
