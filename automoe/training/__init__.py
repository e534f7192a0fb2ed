"""The application's training: training runs from a prepared data dir, their presets, and
retraining on Ray Tune.

- `automoe.training.presets`: `TrainOptions` and the named presets (torch-free);
- `automoe.training.runs`: ``automoe supernet train`` and ``automoe train`` (run dirs,
  resume, final weights, test BLEU) on the loop of `supernet.training.loop`;
- `automoe.training.retrain`: ``automoe retrain``, subnets of a search's front retrained
  from scratch as Ray Tune trials.

Importing this package imports none of them (nor torch).
"""
