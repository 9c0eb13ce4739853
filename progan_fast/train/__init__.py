"""Progressive training: schedule, losses, loop, checkpoints, data. `python -m progan_fast.train --help`."""
