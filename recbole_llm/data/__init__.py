"""Datasets, splits and the candidate protocol shared by every model of a leaderboard."""
