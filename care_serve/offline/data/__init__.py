"""Synthetic and on-disk datasets for training and evaluation."""
