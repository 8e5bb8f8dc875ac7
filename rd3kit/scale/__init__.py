"""Scale-out on existing engines: torch.distributed ranks (`distributed`) and submitit sweeps (`sweep`).

Must not: import torch.distributed or submitit here, hold training logic (that is rd3kit.train), or start
processes at import time. Import the submodules you need.
"""
