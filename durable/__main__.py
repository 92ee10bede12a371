"""``python -m durable``: the ``durable`` command."""

from .cli import main

raise SystemExit(main())
