"""``python -m bench`` — runs the benchmarks that exist so far (codec, signatures, policy, audit, posture)."""

from bench import audit, codec, policy, posture, signatures

raise SystemExit(codec.main([]) or signatures.main([]) or policy.main([]) or audit.main([]) or posture.main([]))
