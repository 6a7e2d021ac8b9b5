"""`python -m sfcomp` runs the CLI (useful under torchrun: `torchrun --nproc_per_node 8 -m sfcomp run ...`)."""
from .cli import main

main()
