"""How long an integration test waits for what it started, before it fails."""

from __future__ import annotations

from typing import Final

#: For a process to be ready, or a computation it runs to show a batch of results.
#: Generous: `scripts/test` runs these tests at nice 19 beside the namespace tests,
#: which can take both cores for seconds, so a start that takes 2 s alone can take
#: 20 s there. Only a broken start waits it out; a working one returns as it is ready.
STARTED_S: Final = 60.0
