"""scaled_dot_product and masked multi-head self-attention."""

import torch

from wordformer import scaled_dot_product
from wordformer.attention import MultiHeadSelfAttention, causal_mask
from wordformer.config import ModelConfig


def test_scaled_dot_product_reproduces_the_chapter_in4_numbers():
    torch.manual_seed(42)
    q, k, v = torch.randn(3, 2), torch.randn(3, 2), torch.randn(3, 2)
    values, attention = scaled_dot_product(q, k, v)
    expected_values = torch.tensor([[0.5698, -0.1520], [0.5379, -0.0265], [0.2246, 0.5556]])
    expected_attention = torch.tensor([[0.4028, 0.2886, 0.3086], [0.3538, 0.3069, 0.3393], [0.1303, 0.4630, 0.4067]])
    assert torch.equal(values.round(decimals=4), expected_values)
    assert torch.equal(attention.round(decimals=4), expected_attention)


def test_scaled_dot_product_prints_the_chapter_values_to_four_decimals(capsys):
    torch.manual_seed(42)
    q, k, v = torch.randn(3, 2), torch.randn(3, 2), torch.randn(3, 2)
    values, attention = scaled_dot_product(q, k, v)
    torch.set_printoptions(precision=4)
    print(values)
    print(attention)
    out = capsys.readouterr().out
    assert "[[ 0.5698, -0.1520]" in out and "[ 0.2246,  0.5556]]" in out
    assert "[[0.4028, 0.2886, 0.3086]" in out and "[0.1303, 0.4630, 0.4067]]" in out


def test_first_token_attends_only_to_itself():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 5, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    values, attention = scaled_dot_product(q, k, v, causal_mask(5))
    assert torch.equal(values[:, 0], v[:, 0])
    assert torch.equal(attention[:, 0, 0], torch.ones(2))


def test_causal_attention_rows_sum_to_one_and_are_zero_above_the_diagonal():
    torch.manual_seed(1)
    q, k, v = torch.randn(3, 7, 4), torch.randn(3, 7, 4), torch.randn(3, 7, 4)
    _, attention = scaled_dot_product(q, k, v, causal_mask(7))
    assert torch.allclose(attention.sum(-1), torch.ones(3, 7))
    upper = torch.triu(torch.ones(7, 7, dtype=torch.bool), diagonal=1)
    assert torch.all(attention[:, upper] == 0)


def test_causal_mask_with_cached_keys_lets_new_queries_see_all_earlier_tokens():
    mask = causal_mask(2, 5)
    assert mask.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]


def test_fused_and_explicit_attention_agree():
    for d_model, heads, t in ((8, 1, 5), (16, 4, 9), (32, 8, 17), (12, 3, 1)):
        torch.manual_seed(d_model + heads)
        att = MultiHeadSelfAttention(ModelConfig(d_model=d_model, num_heads=heads, block_size=32)).eval()
        x = torch.randn(2, t, d_model)
        fused, _ = att(x, fused=True)
        explicit, weights = att(x, return_attention=True)
        assert weights.shape == (2, heads, t, t)
        assert torch.allclose(fused, explicit, atol=1e-5)


def test_padding_keys_get_no_attention_and_padding_queries_do_not_produce_nan():
    torch.manual_seed(3)
    att = MultiHeadSelfAttention(ModelConfig(d_model=8, num_heads=2)).eval()
    x = torch.randn(1, 4, 8)
    keep = torch.tensor([[False, False, True, True]])
    fused, _ = att(x, key_padding_mask=keep)
    explicit, weights = att(x, key_padding_mask=keep, return_attention=True)
    assert not torch.isnan(fused).any()
    assert torch.allclose(fused, explicit, atol=1e-5)
    assert torch.all(weights[0, :, 2:, :2] == 0)
    # the real tokens' outputs equal those of the unpadded sequence
    alone, _ = att(x[:, 2:])
    assert torch.allclose(fused[:, 2:], alone, atol=1e-5)


def test_bf16_attention_on_cpu_is_computed_in_float32_even_under_autocast():
    import torch.nn.functional as F

    from wordformer.attention import fused_attention

    torch.manual_seed(5)
    q, k, v = (torch.randn(2, 4, 16, 8).bfloat16().requires_grad_() for _ in range(3))
    ref_in = [t.detach().float().requires_grad_() for t in (q, k, v)]
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast would otherwise run the kernel in bf16
        y = fused_attention(q, k, v, is_causal=True)
    ref = F.scaled_dot_product_attention(*ref_in, is_causal=True)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, ref.bfloat16())
    y.float().sum().backward()
    ref.sum().backward()
    for ours, theirs in zip((q, k, v), ref_in):
        assert ours.grad.dtype == torch.bfloat16 and torch.equal(ours.grad, theirs.grad.bfloat16())


def test_a_block_under_bf16_autocast_stays_close_to_float32():
    torch.manual_seed(6)
    att = MultiHeadSelfAttention(ModelConfig(d_model=32, num_heads=4, block_size=16)).eval()
    x = torch.randn(2, 16, 32)
    exact, _ = att(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, _ = att(x)
    assert low.dtype == torch.bfloat16
    assert torch.allclose(low.float(), exact, atol=3e-2, rtol=3e-2)
