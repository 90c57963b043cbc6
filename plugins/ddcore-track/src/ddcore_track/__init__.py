"""Experiment tracking for ddcore runs: TensorBoard event files fed from the lifecycle hooks."""
