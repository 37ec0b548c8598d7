"""Building blocks: plain functions and classes over arrays, tensors and files. They import no stage."""
