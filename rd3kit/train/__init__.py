"""Training for the evaluation protocols: loop, optimizers, schedules, augmentations. Pure: no file or network I/O."""
