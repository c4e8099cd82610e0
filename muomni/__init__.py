"""muomni: an RVQ codec, a text-to-codes Talker and a vocoder, trained on one GPU or a CPU."""

import os

# How long the CPU thread pool's idle threads spin before they sleep. GNU OpenMP (torch's on Linux) spins
# for 300,000 iterations by default; on a small machine shared with other work the spinning threads take
# the cores the work needs. Measured on 2 cores, demo-recipe Talker steps at 2 threads (steps/s, same run):
#   beside two busy processes: default 0.52, OMP_WAIT_POLICY=PASSIVE 1.10, GOMP_SPINCOUNT=1000 1.16
#   on an idle machine:        default 2.46, OMP_WAIT_POLICY=PASSIVE 1.49-1.69, GOMP_SPINCOUNT=1000 2.01-2.14
# so a short spin keeps most of the idle speed and all of the gain under load. The runtime reads this when
# torch loads, so the stage scripts import muomni before torch; a value the user sets wins.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "1000")
