"""``python -m bench`` — runs the benchmarks that exist so far (codec, signatures, policy)."""

from bench import codec, policy, signatures

raise SystemExit(codec.main([]) or signatures.main([]) or policy.main([]))
