"""``python -m bench`` — runs the benchmarks that exist so far (codec, signatures, policy, posture)."""

from bench import codec, policy, posture, signatures

raise SystemExit(codec.main([]) or signatures.main([]) or policy.main([]) or posture.main([]))
