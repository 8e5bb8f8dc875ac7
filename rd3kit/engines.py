"""Names of the engines that run a coupled evaluation's seeds (docs/speed.md). Import-light: the CLI reads it.

- "per-seed" (default): the reference, rd3kit.train.coupled, eager; the stored reproductions come from it.
- "compiled": the same loop with the network under torch.compile (rd3kit.train.compiled).
- "multiseed": the uncached seeds stacked into one network (rd3kit.train.multiseed).

The other engines equal per-seed within float order, not bitwise, so their seeds are cached under their own keys.
"""

PER_SEED = "per-seed"
ENGINES = (PER_SEED, "compiled", "multiseed")
HELP = ("How seeds run (docs/speed.md): per-seed (the reference, eager), compiled (the same loop under torch.compile, "
        "compiled once per process), multiseed (seeds stacked). compiled and multiseed equal per-seed within float "
        "order, and are cached and recorded apart.")
