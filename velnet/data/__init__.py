"""From whole boxes to training tiles: input channels, tiling, and the TFRecord shards with their manifest."""
