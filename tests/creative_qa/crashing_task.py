"""A decode task that kills its worker process on files named ``*crash*`` (a stand-in for a decoder segfault)."""

import os
import signal

from creative_qa.batch.worker import prepare_chunk


def prepare_chunk_or_die(items, spec, max_frames):
    if any("crash" in it["path"] for it in items):
        os.kill(os.getpid(), signal.SIGKILL)
    return prepare_chunk(items, spec, max_frames)
