"""``python -m bench`` — runs the benchmarks that exist so far (codec, signatures)."""

from bench import codec, signatures

raise SystemExit(codec.main([]) or signatures.main([]))
