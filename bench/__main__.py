"""``python -m bench`` — runs the benchmarks that exist so far (codec)."""

from bench.codec import main

raise SystemExit(main())
