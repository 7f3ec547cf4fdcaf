"""Readers, synthetic generator, Ray Data preparation and in-memory sequences."""
