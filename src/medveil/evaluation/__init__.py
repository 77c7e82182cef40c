"""Evaluations that produce the project's numbers: utility (what a model can still learn) and privacy (what an attacker recovers)."""
