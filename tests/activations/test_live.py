"""The live source streams the same rows a cache would hold, without touching disk."""

import numpy as np

from raysae.activations import generate_caches, live_dataset, read_cache


def test_live_rows_equal_cached_rows(tiny_config, ray_local, tmp_path):
    cfg = tiny_config()
    (directory,) = generate_caches(cfg).values()
    cached = np.stack([r["acts"] for r in read_cache(directory, columns=["acts"]).take_all()])
    live_cfg = tiny_config("activations.source=live", f"activations.cache_dir={tmp_path / 'unused'}")
    live = np.concatenate([b["acts"] for b in live_dataset(live_cfg).iter_batches(batch_format="numpy")])
    assert live.shape == cached.shape == (1500, 32)
    order = lambda x: x[np.lexsort(x.T[::-1])]  # noqa: E731
    assert np.array_equal(order(live), order(cached))
    assert not (tmp_path / "unused").exists()
    assert live_dataset(live_cfg).count() == 1500
