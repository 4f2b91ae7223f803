"""Large elementwise sweeps: one intra-op thread, as the machine is shared."""

import torch

torch.set_num_threads(1)
