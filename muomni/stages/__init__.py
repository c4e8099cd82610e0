"""The three training stages, one module each and the same shape three times (docs/DESIGN.md §1):

    codec.py    the RVQ mel codec                 (train_codec.py)
    talker.py   the Talker, text -> codec codes   (train_talker.py)
    vocoder.py  the HiFi-GAN vocoder              (train_vocoder.py)

Each holds its run config (``data``, ``model``, ``train`` sections), ``build(cfg, args) -> State`` (the run, its
data, model, optimizers and schedule, restored on --resume; ``new_state`` makes the model and optimizers alone,
for a benchmark), ``next_batch(state, step)``, ``train_step(state, batch, step)`` (one optimizer step),
``log_record(state, out)``, ``evaluate(state, step)``, ``samples(state, step)`` and ``speech_wavs(state, items)``.
``loop.py`` is the one training loop that drives any of them (``loop.train``); ``optim.py`` builds every
optimizer; ``state.py`` holds the fields the codec's and the Talker's states share.
"""
