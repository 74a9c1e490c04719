"""frame_local_attention against a dense-mask reference, both forms, with and without leading text."""

import pytest
import torch

from motionguide.attention.kernels import chunked_logsumexp, frame_local_attention

from helpers import dense_attention, frame_local_mask


@pytest.mark.parametrize("text_len", [0, 5])
@pytest.mark.parametrize("renormalize", [True, False])
def test_frame_local_matches_dense_mask(text_len, renormalize):
    b, h, d, frames, per_frame = 2, 3, 8, 4, 6
    s = text_len + frames * per_frame
    q, k, v = (torch.randn(b, s, h, d) for _ in range(3))
    out = frame_local_attention(q, k, v, frames=frames, text_len=text_len, renormalize=renormalize,
                                chunk_elements=37)  # tiny chunks exercise the chunk loop
    mask = frame_local_mask(text_len, frames, per_frame)
    ref = dense_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask, renormalize)
    torch.testing.assert_close(out.transpose(1, 2), ref, atol=1e-5, rtol=1e-5)


def test_nonrenormalized_output_shrinks_by_dropped_mass():
    q, k, v = (torch.randn(1, 12, 2, 4) for _ in range(3))
    ones = torch.ones_like(v)
    kept = frame_local_attention(q, k, ones, frames=3, renormalize=False)
    # with v = 1 the output is the full softmax's mass on the query's own frame (3 frames of 4 tokens), < 1
    probs = torch.softmax(q.transpose(1, 2) @ k.permute(0, 2, 3, 1) / 4 ** 0.5, dim=-1)  # [1, H, S, S]
    frame = torch.arange(12) // 4
    own_mass = (probs * (frame[:, None] == frame[None, :])).sum(dim=-1).transpose(1, 2)  # [1, S, H]
    torch.testing.assert_close(kept, own_mass[..., None].expand_as(kept), atol=1e-6, rtol=1e-5)
    assert (own_mass < 1).all()
    torch.testing.assert_close(frame_local_attention(q, k, ones, frames=3, renormalize=True), ones)


def test_single_frame_equals_full_attention():
    q, k, v = (torch.randn(1, 10, 2, 4) for _ in range(3))
    full = dense_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    for renorm in (True, False):
        torch.testing.assert_close(frame_local_attention(q, k, v, frames=1, renormalize=renorm), full,
                                   atol=1e-5, rtol=1e-5)


def test_chunked_logsumexp_matches_dense():
    q, k = torch.randn(2, 17, 3, 8), torch.randn(2, 23, 3, 8)
    ref = torch.logsumexp(torch.einsum("bqhd,bkhd->bhqk", q.double(), k.double()) / 8 ** 0.5, -1).transpose(1, 2)
    torch.testing.assert_close(chunked_logsumexp(q, k, chunk_elements=50), ref.float(), atol=1e-5, rtol=1e-5)


def test_frames_must_divide_tokens():
    q = torch.randn(1, 10, 1, 4)
    with pytest.raises(ValueError, match="latent frames"):
        frame_local_attention(q, q, q, frames=3)
