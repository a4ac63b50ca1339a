"""Every test starts from the same random state, whatever ran before it on its worker (pytest-xdist
hands tests to workers in varying order): a test that draws random inputs draws the same ones each run."""
import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _same_random_state_for_every_test():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield
