import os
import sys

from charnn.cli import main

rc = main()
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    # Under torchrun, leave without the interpreter's finalisation: gloo's worker threads that
    # outlive the (already destroyed) process group were seen to abort a finished rank there
    # ("terminate called without an active exception", SIGABRT; PyTorch's own discussion:
    # pytorch/pytorch#179291), turning a run saved in full into a failed torchrun. Everything
    # was written and fsynced before this point; only the buffered output is left to flush.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc or 0)
raise SystemExit(rc)
