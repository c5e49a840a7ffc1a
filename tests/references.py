"""Plain-Python references that the tests hold the vectorised code to."""

import numpy as np


def gae_loop(rewards, values, lengths, gamma, lam):
    """GAE advantages by the textbook backward loop, row by row over its first ``lengths[b]``.

    The value after a response's last token is 0; entries past a row's length stay 0.
    """
    adv = np.zeros_like(rewards)
    for b, n in enumerate(lengths):
        running = 0.0
        for t in reversed(range(int(n))):
            next_value = values[b, t + 1] if t + 1 < n else 0.0
            delta = rewards[b, t] + gamma * next_value - values[b, t]
            running = delta + gamma * lam * running
            adv[b, t] = running
    return adv
