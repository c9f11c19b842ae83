"""Attacks and certifiers. They work in [0, 1] pixel space; eps is always in pixel units."""
