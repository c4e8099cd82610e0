"""muomni: an RVQ codec, a text-to-codes Talker and a vocoder, trained on one GPU or a CPU."""

import os

# The CPU thread pool's idle threads sleep instead of spinning (OpenMP's default is to spin). On a small
# machine shared with other work, spinning threads take the cores the work needs: Talker steps at 2
# threads beside other processes ran 2.5-8x slower (measured). The runtime reads this when torch loads,
# so stages import muomni before torch; a value the user sets wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
