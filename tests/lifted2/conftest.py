"""Tiny tensors: one intra-op thread avoids thread-pool overhead on a shared machine."""

import torch

torch.set_num_threads(1)
