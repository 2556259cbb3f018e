"""The runner's policies, one concern per module, applied in the order of DESIGN.md."""
