"""Training and hyperparameter search (keras-tuner) on a shard dataset."""
