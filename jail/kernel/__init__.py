"""Kernel-facing building blocks, one concern per module. Modes use these; these never import modes."""
