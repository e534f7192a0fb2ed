"""Supernet training: the loop and its parts.

- `loop`: the training loop (`train`), checkpoints, validation and exact resume;
- `sampling`: sampling rules (uniform, sandwich), stable seeds, probe subnets (torch-free);
- `schedule`: learning-rate schedules (torch-free);
- `config`: `TrainConfig`;
- `loss`: label-smoothed cross entropy;
- `evaluate`: dev loss of a subnet;
- `checkpoint`: atomic, weights-only checkpoints with identity checks and averaging;
- `distributed`: torchrun process group and the manual gradient all-reduce;
- `logs`: CSV logs rewritten atomically and cut back on resume.
"""
