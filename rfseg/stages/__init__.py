"""Stages: one module per pipeline stage, each callable from Python with plain arguments. They import blocks only."""
