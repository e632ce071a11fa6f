"""`python -m hf_mistral_kit` is the `hf-mistral-kit` command."""

from hf_mistral_kit.cli import main

raise SystemExit(main())
