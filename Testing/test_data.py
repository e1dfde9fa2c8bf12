"""The validation split must keep patients apart: contiguous blocks, a gap of GAP indices to training."""

from brainxai.data import GAP, block_split, figshare_samples, no_tumor_samples


def test_figshare_split_is_block_separated(data_dir):
    samples = figshare_samples(data_dir / "figshare")
    train, val = block_split(samples)
    assert {s.label for s in val} == {"glioma", "meningioma", "pituitary"}
    assert 0.15 < len(val) / len(samples) < 0.25
    train_idx = sorted(s.index for s in train)
    for v in val:
        assert all(abs(v.index - t) > GAP for t in train_idx), v.key


def test_no_tumor_split_disjoint(data_dir):
    train, val = block_split(no_tumor_samples(data_dir / "br35h_no_tumor"))
    assert val and not {s.key for s in train} & {s.key for s in val}
    assert min(abs(v.index - t.index) for v in val for t in train) > GAP
