"""Attention forward+backward on CPU: SDPA's flash kernel vs SDPA math vs explicit (fp32 softmax).

    OMP_NUM_THREADS=1 python benchmarks/attention_cpu.py

Why umm/nn/attention.py writes attention out on CPU. CPU time per call (process_time), bf16, B32 H4 Dh64.
"""
import time, torch, torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
for T in [84, 132, 260]:
    q = torch.randn(32, 4, T, 64, dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(32, 4, T, 64, dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(32, 4, T, 64, dtype=torch.bfloat16, requires_grad=True)
    mask = torch.ones(32, 1, T, T, dtype=torch.bool).tril()
    def manual():
        s = (q @ k.transpose(-1, -2)).float() * 0.125
        s = s.masked_fill(~mask, float("-inf"))
        return s.softmax(-1).to(v.dtype) @ v
    for name, fn in [("flash", lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)),
                     ("math", None), ("manual", manual)]:
        def run():
            if name == "math":
                with sdpa_kernel(SDPBackend.MATH):
                    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            else:
                o = fn()
            o.float().sum().backward()
        run()
        ts=[]
        for _ in range(5):
            t=time.process_time(); run(); ts.append(time.process_time()-t)
        print(T, name, f"{sorted(ts)[2]*1000:.1f} ms")
